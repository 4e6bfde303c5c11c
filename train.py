"""Train the ARC transformer: from scratch, full fine-tune (--init), or LoRA fine-tune (--init --lora-rank).

    python train.py                                   # the default CPU run (sized for < 15 min on 2 cores)
    python train.py --max-steps 5000 --out checkpoints/long
    python train.py --resume --out checkpoints/long   # continue where it stopped
    python train.py --layout in_context --rope 1d     # the walkthrough's layout: demonstrations in the context
    python train.py --init checkpoints/base --lora-rank 16 --out checkpoints/lora
    python train.py --config configs/gpu.toml         # a named run (configs/), flags override its values
    torchrun --standalone --nproc_per_node=4 train.py --out checkpoints/ddp   # data-parallel on 4 GPUs (README)

Every flag is a field of arc.training.config.TrainConfig or of a config nested in it (arc.model.config.ModelConfig,
arc.model.config.LoRAConfig with the lora- prefix): `python train.py -h` lists them with their meaning.
"""
import argparse
import json
import time
from dataclasses import asdict

from arc.infra import distributed
from arc.infra.config import add_config_flags, build_config, given_flags, load_config_file
from arc.infra.errors import ConfigError, cli_main
from arc.model.checkpoint import read_config
from arc.training.config import TrainConfig
from arc.training.trainer import saved_train_config, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, TrainConfig)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete "
                        "checkpoint (its saved config, with any flags given here overriding it; a change of "
                        "architecture or data is refused, and so is --config)")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error (also ARC_DEBUG=1)")
    args = parser.parse_args()
    given = given_flags(args, TrainConfig)

    if args.resume:
        if args.config:  # the saved config is the run's; a file would silently undo earlier resumes' changes
            raise ConfigError(f"--config {args.config}: --resume continues the run with its saved config "
                              "(config.json); give only the flags to change")
        if "out" not in given:
            parser.error("--resume needs --out, the run folder to continue")
        saved = saved_train_config(read_config(given["out"]), given["out"])
        saved.stop_at_step = None  # an early stop applies to the run that asked for it, not to its continuation
        config = build_config(TrainConfig, given, base=saved)
    else:
        if args.config:
            given = {**load_config_file(args.config, TrainConfig, given), "config_file": args.config}
        given.setdefault("out", time.strftime("checkpoints/run-%Y%m%d-%H%M%S"))
        config = build_config(TrainConfig, given)

    if distributed.launched_rank() == 0:
        print("config:", json.dumps(asdict(config), indent=2))
    try:
        train(config, resume=args.resume)
    finally:
        distributed.close()


if __name__ == "__main__":
    cli_main(main)  # a bad flag, data file or checkpoint: one line on stderr, exit status 1 (arc.infra.errors)
