"""TrainConfig: every setting of a training run (train.py's flags and configs/*.toml, arc.infra.config), nesting
the model's shape (ModelConfig) and the LoRA adapter (LoRAConfig); saved under "training" in each checkpoint's
config.json.

Each field declares its rule and whether --resume may change it (frozen: the run's architecture and data);
TrainConfig.problems holds the relations between fields, among them the flags a run would silently
ignore (model flags beside --init, LoRA flags without an adapter), which are refused; the row layout's
options and their rules are its own config's (arc.layouts.config.LayoutConfig, nested here). The checks
that need to know ARC (its data sources and splits, the task sets) are arc.data.tasks', the bounds every
config shares arc.infra.config's. `read_training` reads the "training" section of a checkpoint's
config.json by the same rules (for --resume, and for evaluate.py, which takes the layout from it), the
layout's settings of a checkpoint written before LayoutConfig existed included.
"""
from __future__ import annotations

from dataclasses import dataclass

from arc.data.tasks import TASK_SETS, data_source, excluded_source, split_problems
from arc.infra.config import (
    MAX_BATCH,
    MAX_MINUTES,
    MAX_SEED,
    MAX_THREADS,
    PRECISIONS,
    build_config,
    changed_settings,
    choice,
    device,
    ignored,
    integer,
    nested,
    number,
    option,
    optional,
    out_folder,
    saved_problems,
    settings,
)
from arc.infra.errors import CheckpointError, ConfigError
from arc.layouts.config import LayoutConfig, nested_layout
from arc.model.checkpoint import has_checkpoint
from arc.model.config import MIN_SEQ_LEN, LoRAConfig, ModelConfig
from arc.training.optim import MUON_LR, OPTIMIZERS, SCHEDULES, Recipe


@dataclass
class TrainConfig:
    # the row layout and its options (flags --layout, --evaluated-share, --pack, ...: arc.layouts.config)
    layout: LayoutConfig = nested(LayoutConfig)
    # data
    data: str = option("arc1", data_source, frozen=True,
                       help="arc1 | arc2 | a folder of task JSON files | a Kaggle *_challenges.json")
    split: str = option("training", frozen=True, help="training | evaluation (for arc1/arc2)")
    eval_data: str = option("arc1", data_source, frozen=True, help="where the held-out tasks come from")
    eval_split: str = option("evaluation", frozen=True,
                             help="training | evaluation (for arc1/arc2): the held-out tasks' split")
    eval_set: str = option("seed20", choice(*TASK_SETS, "all"), frozen=True,
                           help='evaluated task set (or "all"): its test outputs give the eval loss, never trained '
                                "on; pair layout: its demonstrations are trained on")
    extra_data: str | None = option(None, excluded_source, frozen=True,
                                    help="more training tasks, DATA:SPLIT (arc2:training: ARC-AGI-2's); those already "
                                         "among the training tasks (by id or content) or evaluated leave them, and "
                                         "--exclude-evaluated applies to them too; none: no extra tasks")
    exclude_evaluated: str | None = option("arc1:evaluation", excluded_source, frozen=True,
                                           help="data:split whose copies (same id or content) leave the training "
                                                'data; "none" keeps all')
    max_row_tokens: int | None = option(None, optional(integer(MIN_SEQ_LEN)), frozen=True,
                                        help="longest training row in tokens (None: the model's max_seq_len); longer "
                                             "in-context rows drop demonstrations to fit")
    # model: the size and position scheme of a model trained from scratch (flags --d-model, --rope, ...);
    # with --init the checkpoint decides, and grid_positions can be added to a plain one (zero-initialised)
    model: ModelConfig = nested(ModelConfig, frozen=True)  # the model trained from scratch
    # fine-tuning
    init: str | None = option(None, frozen=True,
                              help="checkpoint folder to start from (full fine-tune, or the LoRA base), or a Hugging "
                                   "Face Llama folder (arc.model.hf; its model flags then come from it)")
    lora: LoRAConfig = nested(LoRAConfig, flags="lora-", frozen=True)  # rank > 0: a LoRA fine-tune of init
    lora_base_bf16: bool = option(False,
                                  help="hold the frozen base weights in bf16 (CUDA only, e.g. a 1B Llama; on CPU they "
                                       "stay fp32); adapters stay fp32")
    # optimisation
    max_steps: int = option(1600, integer(0),
                            help="optimizer steps (the main job: sized so that training and evaluate.py's defaults "
                                 "finish in under 10 minutes on 2 CPU cores, 30% slower ones included, RESULTS.md)")
    minutes: float | None = option(None, optional(number(0, MAX_MINUTES, above=True)),
                                   help="train for this many minutes of training time instead of --max-steps: the "
                                        "schedule runs on the time spent training (evals and saves excluded) and ends "
                                        "on time on any machine; the step count is open (--stop-at-step still leaves "
                                        "early); not bitwise reproducible")
    batch_size: int = option(1, integer(1, MAX_BATCH),
                             help="per micro-batch: packed (--pack, the pair layout's way), sequences of "
                                  "max_row_tokens tokens (the model's max_seq_len by default), each filled with whole "
                                  "rows; padded (--no-pack, the in_context layout's way), rows padded to the longest")
    grad_accum: int = option(1, integer(1, MAX_BATCH),
                             help="micro-batches per optimizer step (per rank under torchrun: the global batch is "
                                  "batch_size * grad_accum * ranks)")
    lr: float = option(1e-3, number(0, above=True), help="peak learning rate")
    min_lr_ratio: float = option(0.1, number(0, 1), help="the cosine decays to lr * min_lr_ratio")
    warmup_steps: int = option(30, integer(0), help="linear warmup from 0 (steps, with --minutes too)")
    schedule: str = option("cosine", choice(*SCHEDULES),
                           help="after the warmup: cosine (decay to lr * min_lr_ratio over the run) | wsd (constant, "
                                "then a linear decay over the last --decay-fraction)")
    decay_fraction: float = option(0.2, number(0, 1),
                                   help="(wsd) the last part of the run (of its steps, or of its --minutes) over "
                                        "which the lr decays")
    weight_decay: float = option(0.1, number(0),
                                 help="decay on matrices only (not norms, not embeddings); the same shrink per step "
                                      "under Muon")
    optimizer: str = option("auto", choice("auto", *OPTIMIZERS), frozen=True,
                            help="auto (muon where the run computes in bf16, adamw in fp32 or for LoRA: "
                                 "arc.training.optim.auto_optimizer; the name chosen is saved) | adamw | muon "
                                 "(torch.optim.Muon for the blocks' attention and MLP matrices, AdamW for the "
                                 "embeddings, norms and head)")
    muon_lr: float = option(MUON_LR, number(0, above=True),
                            help="(muon) Muon's peak learning rate; the schedule scales it as it scales --lr")
    grad_clip: float = option(1.0, number(0), help="max global gradient norm (0: no clipping)")
    precision: str = option("auto", choice(*PRECISIONS),
                            help="auto (bf16 autocast where a start-up measurement finds bf16 matmuls faster than "
                                 "fp32, else fp32) | bf16 | fp32")
    compile: bool = option(True,
                           help="torch.compile the transformer blocks (one graph shared by all; packed batches: one "
                                "static shape, padded: dynamic lengths), compiled before the first step (RESULTS.md)")
    activation_checkpointing: bool = option(False,
                                            help="recompute each block's activations in the backward pass instead of "
                                                 "keeping them: less memory (long contexts, large models), about a "
                                                 "third more compute")
    # bookkeeping
    out: str = option("checkpoints/run", out_folder, help="run folder: checkpoint, config.json, metrics.jsonl")
    seed: int = option(0, integer(0, MAX_SEED), frozen=True, help="seeds the weights and every training row")
    device: str = option("auto", device, help="auto | cpu | cuda | cuda:N")
    threads: int = option(0, integer(0, MAX_THREADS),
                          help="CPU threads for torch (0: torch's default); 1 leaves a core free for other work")
    log_every: int = option(25, integer(1), help="steps between log lines")
    eval_every: int = option(100, integer(1), help="steps between eval-loss measurements (and at the end)")
    save_every: int = option(100, integer(1), help="steps between checkpoints (and at the end)")
    stop_at_step: int | None = option(None, optional(integer(0)),
                                      help="leave early after this step with a resumable checkpoint")
    config_file: str | None = option(None, flag=False,
                                     help="the TOML file (--config) the settings were read from, before the flags; "
                                          "None: flags only")

    def recipe(self) -> Recipe:
        """How this run trains its weights (arc.training.optim.Recipe)."""
        return Recipe(self.lr, self.warmup_steps, self.min_lr_ratio, self.schedule, self.decay_fraction,
                      self.weight_decay, self.optimizer, self.muon_lr, self.grad_clip)

    def problems(self, flag) -> list[str]:
        """What the fields' own rules cannot see: relations between fields, and flags this run would ignore."""
        return self._data_problems(flag) + self._fine_tune_problems(flag) + self._recipe_problems(flag)

    def _data_problems(self, flag) -> list[str]:
        found = split_problems(flag("split"), self.data, self.split)
        found += split_problems(flag("eval_split"), self.eval_data, self.eval_split)
        sizes = (self.max_row_tokens, self.model.max_seq_len)
        if self.init is None and all(type(v) is int for v in sizes) and self.max_row_tokens > self.model.max_seq_len:
            found.append(f"{flag('max_row_tokens')} {self.max_row_tokens}: must be <= {flag('model.max_seq_len')} "
                         f"{self.model.max_seq_len}")
        return found

    def _fine_tune_problems(self, flag) -> list[str]:
        lora = type(self.lora.rank) is int and self.lora.rank > 0
        found = []
        if self.init is not None and not has_checkpoint(self.init):
            found.append(f"{flag('init')} {self.init}: must be a checkpoint folder (a run folder of train.py)")
        if lora and self.init is None:
            found.append(f"{flag('lora.rank')} {self.lora.rank}: a LoRA run fine-tunes a checkpoint: "
                         f"give {flag('init')} too")
        if self.init is not None:
            model_flags = [f"model.{name}" for name in settings(ModelConfig) if name != "grid_positions"]
            found += ignored(self, flag, model_flags, f"the checkpoint decides the model with {flag('init')} "
                                                      f"(only {flag('model.grid_positions')} may be given)")
        this_run = f"(this run: {flag('lora.rank')} {self.lora.rank})"
        if lora and self.init is not None:  # the adapter goes on the checkpoint as it is (trainer.build_model)
            found += ignored(self, flag, ["model.grid_positions"],
                             f"adds grid positions in a full fine-tune only {this_run}")
        if not lora:
            found += ignored(self, flag, ["lora_base_bf16"], f"applies to a LoRA adapter only {this_run}")
        return found

    def _recipe_problems(self, flag) -> list[str]:
        """The budget, the schedule and the optimiser: each setting that only means something beside another."""
        found = []
        if self.minutes is not None:
            found += ignored(self, flag, ["max_steps"], f"a {flag('minutes')} run has no step budget: it trains until "
                                                        f"its time is spent ({flag('stop_at_step')} leaves early)")
        if self.schedule != "wsd":
            found += ignored(self, flag, ["decay_fraction"], f"applies to {flag('schedule')} wsd only")
        if self.optimizer == "adamw":
            found += ignored(self, flag, ["muon_lr"], f"applies to {flag('optimizer')} muon or auto only")
        elif self.optimizer == "muon" and type(self.lora.rank) is int and self.lora.rank > 0:
            found.append(f"{flag('optimizer')} muon: Muon trains the blocks' full matrices, a LoRA run only its "
                         f"adapters (this run: {flag('lora.rank')} {self.lora.rank})")
        return found


# Fields that name paths of the machine that trained: a checkpoint read elsewhere (or later) may name paths
# that are gone, which says nothing about the checkpoint. Their types are checked; their rules only when
# a run is resumed (validate, with the run's other flags).
PATH_FIELDS = ("data", "eval_data", "extra_data", "exclude_evaluated", "out")


def read_training(config: dict, where: str) -> TrainConfig:
    """The TrainConfig a checkpoint's config.json records in its "training" section, every value typed and
    held to its field's rule (those of PATH_FIELDS aside) before anything reads it; CheckpointError naming
    `where` (the file) and each problem. The section's "model" is checked as the model's own section is
    (ModelConfig's rules and relations)."""
    section = config.get("training")
    if not isinstance(section, dict):
        raise CheckpointError(f"{where}: records no training config (a 'training' object): not a run of train.py")
    if "optimizer" not in section:  # a run from before --optimizer: AdamW was the only one (not today's default)
        section = {**section, "optimizer": "adamw"}
    section = nested_layout(section)  # a run from before LayoutConfig: its layout's settings were flat
    if found := saved_problems(TrainConfig, section, ("training",), unchecked=PATH_FIELDS, relations=False):
        raise CheckpointError(f"{where}: {'; '.join(found)}")
    return build_config(TrainConfig, section)


def resume_changes(saved: TrainConfig, cfg: TrainConfig) -> dict[str, list]:
    """The flags in which cfg (a resumed TrainConfig) differs from the saved run's, as {flag: [old, new]};
    ConfigError listing every change of a frozen field (architecture or data), which a resume cannot take.
    --optimizer auto is the saved run's optimiser (it was resolved to it when the run started)."""
    if cfg.optimizer == "auto":
        cfg.optimizer = saved.optimizer
    refused, allowed = changed_settings(saved, cfg)
    if refused:
        raise ConfigError(f"--resume {cfg.out}: the run was trained with another architecture or data; refused "
                          f"changes: {', '.join(refused)} (drop these flags to continue it, or start a new run with "
                          "another --out)")
    allowed.pop("--out", None)  # where the run is, not how it trains
    return allowed
