"""Evaluate a checkpoint on ARC tasks: exact match, a per-task table, results.json and submission.json.

    python evaluate.py                                  # newest checkpoint under checkpoints/, seed20, greedy
    python evaluate.py --checkpoint checkpoints/base --task-set all      # all 400 ARC-AGI-1 evaluation tasks
    python evaluate.py --adapter checkpoints/lora       # a LoRA run on top of its base checkpoint
    python evaluate.py --ttt-steps 32 --decode dfs --views 4 --select poe  # test-time training, search, voting
    python evaluate.py --tasks 00576224,0a1d4ef5 --device cuda
    python evaluate.py --show                           # also print the expected and predicted grids (ANSI colours)

Beside results.json and submission.json it writes report.html: a page with a card per task (arc.report).

Every flag is a field of arc.evaluation.EvalConfig, arc.predict.DecodeConfig or (with the ttt- prefix)
arc.ttt.TTTConfig: `python evaluate.py -h` lists them with their meaning.
"""
import argparse

from arc.cli import add_config_flags, given_flags
from arc.evaluation import EvalConfig, evaluate
from arc.predict import DecodeConfig
from arc.ttt import TTTConfig

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
add_config_flags(parser, EvalConfig)
add_config_flags(parser, DecodeConfig)
add_config_flags(parser, TTTConfig, prefix="ttt-")
args = parser.parse_args()
config = EvalConfig(**given_flags(args, EvalConfig), decoding=DecodeConfig(**given_flags(args, DecodeConfig)),
                    ttt=TTTConfig(**given_flags(args, TTTConfig, prefix="ttt-")))
evaluate(config)
