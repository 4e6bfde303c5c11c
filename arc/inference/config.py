"""The settings of an evaluation (evaluate.py's flags and configs/eval-*.toml, arc.infra.config): EvalConfig,
nesting how test outputs are decoded (DecodeConfig), per-task test-time training (TTTConfig) and the
adaptation of new task embeddings (AdaptConfig).

Each field declares its rule; each config's `problems` holds the relations between its fields, among them
the flags this evaluation would silently ignore (a search's settings under another search, test-time
training's while it is off), which are refused. What needs the checkpoint (its layout) is checked once it
is loaded (arc.inference.evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass

from arc.data.tasks import TASK_SETS, data_source, split_problems
from arc.data.tokenizer import VOCAB_SIZE
from arc.infra.config import (
    MAX_BATCH,
    MAX_MINUTES,
    MAX_SECONDS,
    MAX_SEED,
    MAX_THREADS,
    PRECISIONS,
    choice,
    device,
    ignored,
    integer,
    nested,
    number,
    option,
    optional,
    out_folder,
    settings,
    shown,
)
from arc.model.checkpoint import has_checkpoint
from arc.model.config import MIN_SEQ_LEN, LoRAConfig

# The settings of one decoding strategy or selection only (DecodeConfig.decode, .select): refused under another.
_DECODE_ONLY = {"sample": ("samples", "temperature", "top_k"),
                "dfs": ("dfs_threshold", "dfs_max_candidates", "dfs_time_limit_s", "dfs_keep_greedy")}
_SELECT_ONLY = {"poe": ("score_views", "rerank")}
# views, scoring views, samples per view: far above any useful count (beyond, a list of 10**12 views hangs)
MAX_VIEWS = 1024
# below, sampling is greedy decoding; near 1e-308 the scaled logits overflow to inf (NaN odds)
MIN_TEMPERATURE = 1e-6


@dataclass
class DecodeConfig:
    decode: str = option("greedy", choice("greedy", "sample", "dfs"), help="greedy | sample | dfs")
    views: int = option(0, integer(0, MAX_VIEWS),
                        help="augmented views to generate under (0: the layout's default, 1 = the task as given for "
                             "in-context, 8 for pair; under --minutes its budget default, 32 for pair)")
    select: str = option("vote", choice("vote", "poe"),
                         help="vote | poe: how the attempts are chosen among the pooled candidates")
    score_views: int = option(8, integer(1, MAX_VIEWS), help='views that score each candidate for "poe"')
    rerank: int = option(0, integer(0, MAX_VIEWS),
                         help="(poe) score only the N candidates with the most votes (0: every candidate)")
    drop_input_copies: bool = option(True,
                                     help="drop candidates equal to the test input while any other remains (mdlARC's "
                                          "filter: an ARC answer is almost never its input)")
    attempts: int = option(2, integer(1), help="attempts per test input (the ARC Prize allows 2)")
    samples: int = option(8, integer(1, MAX_VIEWS), help="samples per view (decode=sample)")
    temperature: float = option(1.0, number(MIN_TEMPERATURE), help="sampling temperature (decode=sample)")
    top_k: int | None = option(None, optional(integer(1, VOCAB_SIZE)),
                               help="sample among the k likeliest tokens only (decode=sample)")
    dfs_threshold: float = option(0.1, number(0, 1, above=True),
                                  help="keep every output with probability above this (decode=dfs)")
    dfs_max_candidates: int = option(8, integer(1), help="stop a DFS after this many complete outputs")
    dfs_time_limit_s: float = option(60.0, number(0, MAX_SECONDS, above=True),
                                     help="stop a DFS after this long per view")
    dfs_keep_greedy: bool = option(True,
                                   help="(decode=dfs) seed the candidates with the greedy output even when it is "
                                        "below the threshold")
    limit_slack: float = option(2.0, number(0, 1000),
                                help="generate at most this multiple of the answer size the demonstrations suggest "
                                     "(0: up to 30x30; beyond ~1000 every budget is 30x30 anyway)")
    decode_batch_size: int = option(8, integer(1),
                                    help="prompts decoded together (greedy) and rows scored together (poe)")

    def problems(self, flag) -> list[str]:
        """The settings of a strategy or selection this run does not use."""
        found = []
        for decode, names in _DECODE_ONLY.items():
            if self.decode != decode:
                this_run = f"{flag('decode')} {self.decode}"
                found += ignored(self, flag, names, f"applies to {flag('decode')} {decode} only (this run: {this_run})")
        for select, names in _SELECT_ONLY.items():
            if self.select != select:
                this_run = f"{flag('select')} {self.select}"
                found += ignored(self, flag, names, f"applies to {flag('select')} {select} only (this run: {this_run})")
        return found


# Step caps standing for "as many as the budget allows" under --minutes (far beyond what any budget reaches)
BUDGET_STEPS = 10**9


@dataclass
class TTTConfig:
    steps: int | None = option(None, optional(integer(0)),
                               help="AdamW steps per task on its demonstrations (0: no test-time training; default: "
                                    "none without --minutes, as many as the budget gives with it)")
    seconds: float = option(0.0, number(0, MAX_SECONDS),
                            help="also stop a task's training after this many seconds (0: no time limit; under "
                                 "--minutes the budget decides)")
    train: str = option("full", choice("full", "lora", "embeddings"),
                        help="what moves: every parameter | a fresh LoRA adapter | the task's embedding row")
    stop: str = option("steps", choice("steps", "loo"),
                       help="steps: train `steps` steps | loo: as many (up to `steps`) as minimised a held-out "
                            "demonstration's loss when training on the others")
    # the per-task adapter of --ttt-train lora (flags --ttt-rank, --ttt-alpha, ...)
    lora: LoRAConfig = nested(lambda: LoRAConfig(rank=16), omit=("train_embeddings",))
    lr: float = option(1e-3, number(0, above=True),
                       help="peak learning rate (warmup over the first tenth of the budget, then cosine to a tenth)")
    batch_size: int = option(1, integer(1, MAX_BATCH),
                             help="per step, as train.py's: packed sequences of the row budget (pair layout: a "
                                  "2,048-token sequence holds ~6 rows), or rows padded (in_context); every step gets "
                                  "fresh rows (fresh augmentations)")
    max_row_tokens: int | None = option(None, optional(integer(MIN_SEQ_LEN)),
                                        help="longest row in tokens; None: the evaluation's context budget")
    augment: bool = option(True, help="D8 transform + colour permutation keeping 0 + demonstration order, per row")

    def problems_when_on(self, flag) -> list[str]:
        """An adapter of rank 0 cannot train; the adapter's settings do nothing without one. EvalConfig asks
        while test-time training is on (which it knows: it depends on the budget too)."""
        if self.train == "lora" and self.lora.rank == 0:
            return [f"{flag('lora.rank')} 0: test-time training with {flag('train')} lora trains an adapter of "
                    "rank >= 1"]
        if self.train != "lora":
            return ignored(self, flag, [n for n in settings(TTTConfig) if n.startswith("lora.")],
                           f"applies to {flag('train')} lora only (this run: {flag('train')} {self.train})")
        return []


@dataclass
class AdaptConfig:
    steps: int | None = option(None, optional(integer(0)),
                               help="optimizer steps on the new tasks' demonstrations (0: refuse tasks without an "
                                    "embedding; default: 300 without --minutes, as many as the budget gives with it)")
    seconds: float = option(30.0, number(0, MAX_SECONDS),
                            help="also stop after this many seconds per new task (the tasks adapt jointly: the budget "
                                 "is seconds x tasks; 0: no time limit; under --minutes the budget decides); bounds a "
                                 "large unseen task's adaptation")
    # full, lr 5e-4, replay 0.3: chosen on tune20 under --minutes 30 (RESULTS.md); the rows alone took lr 3e-3
    train: str = option("full", choice("embeddings", "full"),
                        help="full: every parameter (with replay) | embeddings: only the new tasks' rows")
    lr: float = option(5e-4, number(0, above=True),
                       help="peak learning rate (warmup over the first tenth of the budget, then cosine to a tenth)")
    batch_size: int = option(1, integer(1, MAX_BATCH),
                             help="per step: packed sequences of the context budget (pair layout), as train.py's")
    replay: float = option(0.3, number(0, 1, below=True),
                           help="(full) share of the rows from the checkpoint's own training tasks, so that a "
                                "fine-tune of every weight keeps them (rebuilt from its config.json)")
    save_every: int = option(0, integer(0),
                             help="steps between saves of the adapted model into --out/adapted (0: every 5 minutes "
                                  "of adaptation), from which --resume continues")

    def replay_share(self) -> float:
        """The replayed share of the rows: replay when every weight trains; none for the rows alone (no other row
        may move)."""
        return self.replay if self.train == "full" else 0.0


def task_ids(value) -> str | None:
    return None if all(value) else "must be task ids separated by commas, none of them empty"


@dataclass
class EvalConfig:
    checkpoint: str | None = option(None,
                                    help="checkpoint folder (default: the adapter's base with --adapter, else the "
                                         "newest run under checkpoints/)")
    adapter: str | None = option(None,
                                 help="a LoRA run folder whose adapter goes on top of its base checkpoint "
                                      "(--checkpoint, when given, must be that base)")
    data: str = option("arc1", data_source,
                       help="arc1 | arc2 | a folder of task JSON files | a Kaggle *_challenges.json")
    split: str = option("evaluation", help="training | evaluation (for arc1/arc2)")
    task_set: str | None = option(None, optional(choice(*TASK_SETS, "all")),
                                  help="seed20 | all (default: seed20 on arc1 evaluation, else all)")
    tasks: tuple[str, ...] = option((), task_ids, help="explicit task ids, comma-separated (overrides --task-set)")
    max_tasks: int | None = option(None, optional(integer(1)), help="keep only the first N tasks")
    context_tokens: int | None = option(None, optional(integer(MIN_SEQ_LEN)),
                                        help="tokens per example, prompt and answer (default: the model's "
                                             "max_seq_len)")
    device: str = option("auto", device, help="auto | cpu | cuda | cuda:N")
    threads: int = option(0, integer(0, MAX_THREADS), help="CPU threads for torch (0: torch's default)")
    precision: str = option("auto", choice(*PRECISIONS),
                            help="auto (bf16 autocast where a start-up measurement finds bf16 matmuls faster than "
                                 "fp32, else fp32) | bf16 | fp32")
    out: str | None = option(None, optional(out_folder),
                             help="folder for results.json and submission.json (default: <checkpoint>/eval-<task "
                                  "set>)")
    decoding: DecodeConfig = nested(DecodeConfig)  # views, strategy, selection (arc.inference.predict)
    ttt: TTTConfig = nested(TTTConfig, flags="ttt-")  # per-task test-time training (off while ttt.steps is 0)
    # (pair layout) new embeddings for tasks the checkpoint has none for
    adapt: AdaptConfig = nested(AdaptConfig, flags="adapt-")
    minutes: float | None = option(None, optional(number(0, MAX_MINUTES, above=True)),
                                   help="the whole evaluation (loading to submission.json) within this many minutes: "
                                        "joint adaptation of unseen tasks, then test-time training per task, then "
                                        "prediction, by the rule of arc.inference.budget")
    adapt_share: float = option(1.0, number(0, 1),
                                help="(--minutes) share of the budget left after loading for the joint adaptation, "
                                     "when some tasks are unseen; the rest goes to per-task test-time training (1: "
                                     "none, unless no task is unseen: then all of it)")
    resume: bool = option(False, help="continue the evaluation in --out: its saved adaptation and the tasks it "
                                      "finished (the same flags)")
    compile: bool = option(True, help="torch.compile the model's blocks for adaptation's and test-time training's "
                                      "steps (the training step's shape: packed sequences for the pair layout); "
                                      "prediction runs eagerly")
    show: bool = option(False, help="print each task's expected and predicted grids in the terminal (ANSI colours)")
    seed: int = option(0, integer(0, MAX_SEED),
                       help="seeds everything random in an evaluation: the views, sampling, adaptation and test-time "
                            "training")

    def ttt_steps(self) -> int:
        """Test-time training's step cap: the flag, else none without --minutes and the budget's with it."""
        return self.ttt.steps if self.ttt.steps is not None else 0 if self.minutes is None else BUDGET_STEPS

    def adapt_steps(self) -> int:
        """Adaptation's step cap: the flag, else 300 without --minutes and the budget's with it."""
        return self.adapt.steps if self.adapt.steps is not None else 300 if self.minutes is None else BUDGET_STEPS

    def problems(self, flag) -> list[str]:
        found = split_problems(flag("split"), self.data, self.split)
        repeated = sorted({t for t in self.tasks if t and self.tasks.count(t) > 1})  # an empty id: its own rule
        if repeated:
            found.append(f"{flag('tasks')} {shown(self.tasks)}: each task id at most once "
                         f"(repeated: {', '.join(repeated)})")
        for name in ("checkpoint", "adapter"):
            folder = getattr(self, name)
            if folder is not None and not has_checkpoint(folder):
                found.append(f"{flag(name)} {folder}: must be a checkpoint folder (a run folder of train.py)")
        return found + self._budget_problems(flag)

    def _budget_problems(self, flag) -> list[str]:
        """Settings that --minutes decides, or that mean nothing without it; test-time training's while it is off."""
        if type(self.ttt.steps) not in (int, type(None)) or type(self.minutes) not in (int, float, type(None)):
            return []  # refused by their rules
        found = []
        if self.minutes is not None:
            found += ignored(self, flag, ["ttt.seconds", "adapt.seconds"],
                             f"the budget decides it under {flag('minutes')}")
        else:
            found += ignored(self, flag, ["adapt_share"], f"applies to a budgeted run ({flag('minutes')}) only")
        if self.adapt.train != "full":
            found += ignored(self, flag, ["adapt.replay"], f"applies to {flag('adapt.train')} full only")
        if self.ttt_steps() == 0:
            return found + ignored(self, flag, [f"ttt.{name}" for name in settings(TTTConfig) if name != "steps"],
                                   f"applies to test-time training only (this run: {flag('ttt.steps')} 0)")
        return found + self.ttt.problems_when_on(lambda name: flag(f"ttt.{name}"))
