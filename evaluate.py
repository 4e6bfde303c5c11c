"""Evaluate a checkpoint on ARC tasks: exact match, a per-task table, results.json, submission.json and
report.html (every task drawn: demonstrations, expected output, attempts).

    python evaluate.py                                  # newest checkpoint under checkpoints/, seed20
    python evaluate.py --checkpoint checkpoints/base --task-set all      # all 400 ARC-AGI-1 evaluation tasks
    python evaluate.py --adapter checkpoints/lora       # a LoRA run on top of its base checkpoint
    python evaluate.py --ttt-steps 32 --decode dfs --views 4 --select poe  # test-time training, search, voting
    python evaluate.py --tasks 00576224,0a1d4ef5 --show # print the grids in the terminal too
    python evaluate.py --config configs/eval-seed20.toml --views 8   # settings from a file, flags override them

Every flag is a field of arc.inference.config.EvalConfig or of a config nested in it (DecodeConfig; TTTConfig with
the ttt- prefix; AdaptConfig with the adapt- prefix): `python evaluate.py -h` lists them with their meaning.
"""
import argparse

from arc.inference.config import EvalConfig
from arc.inference.evaluation import evaluate
from arc.infra.config import add_config_flags, build_config, given_flags, load_config_file
from arc.infra.errors import cli_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, EvalConfig)
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error (also ARC_DEBUG=1)")
    args = parser.parse_args()
    given = given_flags(args, EvalConfig)
    if args.config:
        given = load_config_file(args.config, EvalConfig, given)
    evaluate(build_config(EvalConfig, given))


if __name__ == "__main__":
    cli_main(main)  # a bad flag, data file or checkpoint: one line on stderr, exit status 1 (arc.infra.errors)
