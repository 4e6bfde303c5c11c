"""The settings of an evaluation (evaluate.py's flags, arc.infra.config): EvalConfig, nesting how test outputs
are decoded (DecodeConfig), per-task test-time training (TTTConfig) and the adaptation of new task embeddings
(AdaptConfig).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from arc.model.config import LoRAConfig


@dataclass
class DecodeConfig:
    decode: str = "greedy"  # greedy | sample | dfs
    views: int = 0  # augmented views to generate under (0: the layout's default, 1 = the task as given for in-context, 8 for pair)
    select: str = "vote"  # vote | poe: how the attempts are chosen among the pooled candidates
    score_views: int = 8  # views that score each candidate for "poe"
    attempts: int = 2  # attempts per test input (the ARC Prize allows 2)
    samples: int = 8  # samples per view (decode=sample)
    temperature: float = 1.0  # sampling temperature (decode=sample)
    top_k: int | None = None  # sample among the k likeliest tokens only (decode=sample)
    dfs_threshold: float = 0.1  # keep every output with probability above this (decode=dfs)
    dfs_max_candidates: int = 8  # stop a DFS after this many complete outputs
    dfs_time_limit_s: float = 60.0  # stop a DFS after this long per view
    dfs_keep_greedy: bool = True  # (decode=dfs) seed the candidates with the greedy output even when it is below the threshold
    limit_slack: float = 2.0  # generate at most this multiple of the answer size the demonstrations suggest (0: up to 30x30)
    batch_size: int = 8  # prompts decoded together (greedy) and rows scored together (poe)
    seed: int = 0  # seeds the views and the sampling


@dataclass
class TTTConfig:
    steps: int = 0  # AdamW steps per task (evaluate.py: 0 means no test-time training)
    lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(rank=16))  # the per-task adapter (flags --ttt-rank, --ttt-alpha, ...)
    lr: float = 1e-3  # constant learning rate after a linear warmup of min(4, steps) steps
    batch_size: int = 4  # rows per step; every step gets fresh rows (fresh augmentations)
    max_row_tokens: int | None = None  # longest row in tokens; None: the evaluation's context budget
    augment: bool = True  # D8 transform + colour permutation keeping 0 + demonstration order, per row
    seed: int = 0  # seeds the rows and the adapter's initialisation (A; B starts at zero)


@dataclass
class AdaptConfig:
    steps: int = 300  # optimizer steps on the new tasks' demonstrations (0: refuse tasks without an embedding)
    seconds: float = 0.0  # also stop after this many seconds of adaptation (0: no time limit)
    train: str = "embeddings"  # embeddings: only the new tasks' rows | full: every parameter
    lr: float = 3e-3  # peak learning rate (warmup over the first tenth of the steps, then cosine to a tenth)
    batch_size: int = 16  # rows per step
    seed: int = 0  # seeds the rows


@dataclass
class EvalConfig:
    checkpoint: str | None = None  # checkpoint folder (default: the adapter's base with --adapter, else the newest run under checkpoints/)
    adapter: str | None = None  # a LoRA run folder whose adapter goes on top of its base checkpoint (--checkpoint, when given, must be that base)
    data: str = "arc1"  # arc1 | arc2 | a folder of task JSON files | a Kaggle *_challenges.json
    split: str = "evaluation"  # training | evaluation (for arc1/arc2)
    task_set: str | None = None  # seed20 | all (default: seed20 on arc1 evaluation, else all)
    tasks: tuple[str, ...] = ()  # explicit task ids, comma-separated (overrides --task-set)
    max_tasks: int | None = None  # keep only the first N tasks
    context_tokens: int | None = None  # tokens per example, prompt and answer (default: the model's max_seq_len)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0: torch's default)
    precision: str = "auto"  # auto (bf16 on CUDA and AMX CPUs, else fp32) | bf16 | fp32
    out: str | None = None  # folder for results.json and submission.json (default: <checkpoint>/eval-<task set>)
    decoding: DecodeConfig = field(default_factory=DecodeConfig)  # views, strategy, selection (arc.inference.predict)
    ttt: TTTConfig = field(default_factory=TTTConfig, metadata={"flags": "ttt-"})  # per-task test-time training (off while ttt.steps is 0)
    adapt: AdaptConfig = field(default_factory=AdaptConfig, metadata={"flags": "adapt-"})  # (pair layout) new embeddings for tasks the checkpoint has none for
    show: bool = False  # print each task's expected and predicted grids in the terminal (ANSI colours)
