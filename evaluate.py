"""Evaluate a checkpoint on ARC tasks: greedy decoding, exact match, a per-task table and results.json.

    python evaluate.py                                  # newest checkpoint under checkpoints/, seed20
    python evaluate.py --checkpoint checkpoints/base --task-set all      # all 400 ARC-AGI-1 evaluation tasks
    python evaluate.py --adapter checkpoints/lora       # a LoRA run on top of its base checkpoint
    python evaluate.py --tasks 00576224,0a1d4ef5 --device cuda

Every flag is a field of arc.evaluation.EvalConfig (`python evaluate.py -h`).
"""
import argparse

from arc.cli import add_config_flags, given_flags
from arc.evaluation import EvalConfig, evaluate

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
add_config_flags(parser, EvalConfig)
config = EvalConfig(**given_flags(parser.parse_args(), EvalConfig))
evaluate(config)
