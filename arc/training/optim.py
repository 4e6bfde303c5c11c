"""How weights are trained, wherever they are trained: the optimiser, the learning-rate schedule, and the one
optimiser step (accumulate over micro-batches, clip, step). Pre-training and fine-tuning (arc.training.trainer),
joint adaptation to new tasks and per-task test-time training (arc.inference) all take them from one place, a
Recipe, and differ only in its values and their budget.

    Recipe       the settings: optimiser, peak learning rate, warmup, decay, weight decay, clipping; builds the
                 optimiser (Recipe.optimizer_for) and the schedule for a budget (Recipe.schedule_for).
                 TrainConfig.recipe() is train.py's; fine_tune_recipe(lr) is adaptation's and test-time training's
    optimisers   AdamW over parameter groups (make_optimizer), or torch.optim.Muon for the blocks' weight matrices
                 with AdamW for the rest (--optimizer muon, MuonAndAdamW: stepped, zeroed, saved and loaded as one
                 optimiser); --optimizer auto (the default) picks one per run (auto_optimizer)
    schedules    linear warmup, then cosine decay (lr_at, the default) or warmup-stable-decay (--schedule wsd:
                 constant, then a linear decay over the last --decay-fraction), over a budget of steps, of seconds
                 of training, or of both (whichever runs out first), in Schedule
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from arc.infra.distributed import SINGLE, World
from arc.infra.runtime import autocast
from arc.layouts.rows import IGNORE, Batch
from arc.model.config import DEFAULT_TARGETS

BETAS = (0.9, 0.95)  # AdamW's (beta1, beta2) in every loop
OPTIMIZERS = ("adamw", "muon")  # what make_optimizer builds; a run may also ask for "auto" (auto_optimizer)
SCHEDULES = ("cosine", "wsd")
# Muon's peak learning rate: Keller Jordan's default and torch.optim.Muon's docstring example, for its
# "original" lr adjustment (the update scaled by sqrt(max(1, rows / columns)))
MUON_LR = 0.02


# --------------------------------------------------------------------------------------------------
# Optimisers
# --------------------------------------------------------------------------------------------------


def is_block_matrix(name: str) -> bool:
    """Whether a parameter is the weight of one of a block's projections (attention wq, wk, wv, wo; SwiGLU
    w_gate, w_up, w_down): the hidden layers' matrices, which Muon trains. Embeddings, norm gains and the
    output head are not (Muon orthogonalises a matrix's update, which suits a map between hidden states,
    not a lookup table or the logits): AdamW trains them, as torch.optim.Muon's documentation and Keller
    Jordan's Muon advise. A LoRA adapter's factors (blocks.0.attn.wq.lora_a) and the frozen base under it
    (wq.base.weight) are not either."""
    parts = name.split(".")
    return (len(parts) == 5 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in ("attn", "mlp")
            and parts[3] in DEFAULT_TARGETS and parts[4] == "weight")


def auto_optimizer(amp_dtype: torch.dtype | None, lora_rank: int) -> str:
    """--optimizer auto: "muon" for a full-weight run that computes in bf16, else "adamw". Muon learned the most
    per minute of the recipe switches on dev20 (eval loss 0.2195 against AdamW's 0.2640 in 10 minutes from
    scratch, bf16 autocast), though a repeat of both narrowed that to 0.2240 against 0.2282, within seed noise
    (RESULTS.md): it learns more per token and no less per minute. torch's Muon orthogonalises each update in
    bf16: cheap where bf16 matmuls are (a run that autocasts to bf16: --precision auto measured them faster
    than fp32), a 1.1-s step where the CPU emulates them, so an fp32 run keeps AdamW. A LoRA run trains
    adapters, which Muon does not.
    train.py resolves it once and saves the name in config.json: a resume keeps the same optimiser anywhere."""
    return "muon" if amp_dtype == torch.bfloat16 and lora_rank == 0 else "adamw"


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, optimizer: str = "adamw",
                   muon_lr: float = MUON_LR) -> torch.optim.AdamW | MuonAndAdamW:
    """The optimiser of the model's trainable parameters: fused AdamW with weight decay on the matrices only
    (not on norm gains, not on the embeddings); with optimizer "muon", torch.optim.Muon at peak muon_lr for
    the blocks' matrices (is_block_matrix) and that AdamW for the rest. Test-time training and adaptation
    call it with the defaults: AdamW."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: {' | '.join(OPTIMIZERS)}")
    matrices, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if optimizer == "muon" and is_block_matrix(name):
            matrices.append(p)
        elif p.ndim >= 2 and not name.startswith("embed"):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters instead of a chain of small ops per tensor (measured faster on CPU too)
    adamw = torch.optim.AdamW(groups, lr=lr, betas=BETAS, fused=True)
    if optimizer == "adamw":
        return adamw
    if not matrices:
        raise ValueError("--optimizer muon: no block matrix is trained (a LoRA run trains adapters only)")
    return MuonAndAdamW(matrices, adamw, lr, muon_lr, weight_decay)


class MuonAndAdamW:
    """torch.optim.Muon for the blocks' matrices and an AdamW for every other parameter, used as one
    optimiser: step, zero_grad, state_dict and load_state_dict act on both, and param_groups lists both
    optimisers' groups, so set_lr and optimizer_step (and the trainer's checkpoints) need nothing else.

    The schedule gives one learning rate, AdamW's (peak: --lr); each Muon group carries lr_scale =
    muon_lr / lr, which set_lr multiplies in, so Muon follows the same warmup and decay from its own peak.
    Weight decay is decoupled in both (the matrix shrinks by lr * weight_decay per step): Muon's groups
    take weight_decay / lr_scale, so --weight-decay shrinks the matrices by the same factor per step under
    either optimiser, whatever --muon-lr is. Both values are set again after a load, so a resume that
    changes --lr or --muon-lr takes the new ones rather than the checkpoint's.

    Cost: torch's Muon orthogonalises each update with 5 Newton-Schulz iterations in bf16. On CUDA and on
    CPUs with AMX that is cheap; a CPU without AMX emulates bf16 matmuls (about 28x slower than fp32 on
    the development CPU), and a Muon step of the default model took 1.1 s there against 2-5 ms for AdamW."""

    def __init__(self, matrices: list[torch.nn.Parameter], adamw: torch.optim.AdamW, lr: float, muon_lr: float,
                 weight_decay: float):
        self.adamw, self.lr_scale, self.weight_decay = adamw, muon_lr / lr, weight_decay
        self.muon = torch.optim.Muon(matrices, lr=muon_lr, weight_decay=weight_decay / self.lr_scale)
        self._set_scale()

    def _set_scale(self) -> None:
        for group in self.muon.param_groups:
            group["lr_scale"], group["weight_decay"] = self.lr_scale, self.weight_decay / self.lr_scale

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("not the state of Muon and AdamW (a run saved with another --optimizer)")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
        self._set_scale()


def set_lr(optimizer: torch.optim.Optimizer | MuonAndAdamW, lr: float) -> None:
    """Every group's learning rate: lr, times the group's lr_scale where it has one (Muon's, above)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # x 1.0 is exact: AdamW's groups get lr itself


# --------------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------------


def lr_at(step: int, peak: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to peak, then cosine decay to peak * min_lr_ratio at max_steps."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return peak * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def last_part_start(max_steps: int, fraction: float) -> int:
    """The first step of the last `fraction` of a run of max_steps steps: its last round(fraction * max_steps)
    steps (--decay-fraction, --final-fraction)."""
    return max_steps - round(fraction * max_steps)


@dataclass(frozen=True)
class Schedule:
    """A run's learning rate at each step: linear warmup, then

        cosine   decay to peak * min_lr_ratio along half a cosine
        wsd      warmup-stable-decay: peak, then a linear decay to peak * min_lr_ratio over the last
                 decay_fraction of the run

    over a budget of steps (max_steps), of seconds of training (seconds), or of both: progress is then the
    further of the two, so the decay ends when the first of them runs out, on any machine. The warmup counts
    steps (warmup_steps: it is there for the optimiser's first updates, however long they take); with
    warmup_share it also ends once that share of the seconds has passed, so a budget whose seconds bind
    before its steps still warms up and decays (a fine-tune of 10**6 steps or 3 s). After a timed warmup,
    progress in time is counted from its end. A learning rate that depends on the clock is not bitwise
    reproducible; the step-budget cosine is lr_at itself (unchanged, bitwise)."""

    peak: float
    warmup_steps: int
    min_lr_ratio: float
    kind: str = "cosine"  # cosine | wsd
    decay_fraction: float = 0.2  # wsd: the last part of the run that decays
    max_steps: int = 0  # the step budget (0: none, the seconds decide)
    seconds: float | None = None  # the time budget, in seconds of training (None: none)
    warmup_share: float = 0.0  # > 0: the warmup also ends after this share of `seconds`

    def lr(self, step: int, elapsed: float = 0.0) -> float:
        """The learning rate of `step`, taken after `elapsed` seconds of training (read with a time budget only)."""
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}: {' | '.join(SCHEDULES)}")
        if self.seconds is None and self.kind == "cosine":
            return lr_at(step, self.peak, self.warmup_steps, self.max_steps, self.min_lr_ratio)
        warmed = self._warmed(step, elapsed)
        if warmed < 1:
            return self.peak * warmed
        return self.peak * (self.min_lr_ratio + (1 - self.min_lr_ratio) * self._left(step, elapsed))

    def _warmup_seconds(self) -> float:
        return self.warmup_share * self.seconds if self.warmup_share and self.seconds else 0.0

    def _warmed(self, step: int, elapsed: float) -> float:
        """How far through its warmup the run is: 1 once it is over."""
        if step >= self.warmup_steps:
            return 1.0
        by_steps = (step + 1) / self.warmup_steps
        timed = self._warmup_seconds()
        return min(1.0, max(by_steps, elapsed / timed)) if timed else by_steps

    def progress(self, step: int, elapsed: float) -> float:
        """How far through the budget after the warmup, 0 to 1: the further of the steps' and the seconds' share."""
        by_steps = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps) if self.max_steps else 0.0
        timed = self._warmup_seconds()
        by_time = (elapsed - timed) / (self.seconds - timed) if self.seconds else 0.0
        return min(1.0, max(0.0, by_steps, by_time))

    def _left(self, step: int, elapsed: float) -> float:
        """How much of the way from peak down to the minimum is left: 1 at the peak, 0 at the minimum."""
        if self.seconds is None:  # wsd over steps: peak up to the decay's first step, then linear to 0 at max_steps
            start = max(self.warmup_steps, last_part_start(self.max_steps, self.decay_fraction))
            return 1.0 if step < start else max(0.0, (self.max_steps - step) / max(1, self.max_steps - start))
        progress = self.progress(step, elapsed)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if self.decay_fraction == 0 or progress < 1 - self.decay_fraction:
            return 1.0
        return (1 - progress) / self.decay_fraction

    def in_last_part(self, fraction: float, step: int, elapsed: float = 0.0) -> bool:
        """Whether `step` (taken after `elapsed` seconds of training) falls in the last `fraction` of the run."""
        if fraction <= 0:
            return False
        if self.seconds is None:
            return step >= last_part_start(self.max_steps, fraction)
        return elapsed >= (1 - fraction) * self.seconds

    def over(self, elapsed: float) -> bool:
        """Whether a time budget is spent after `elapsed` seconds of training (a step budget: never, the
        caller's range of steps ends it)."""
        return self.seconds is not None and elapsed >= self.seconds


# A fine-tune's warmup: this share of its budget (of its steps, or of its seconds when they run out first)
FINE_TUNE_WARMUP = 0.1


@dataclass(frozen=True)
class Recipe:
    """How a model's weights are trained, in one place: the optimiser (AdamW, or Muon + AdamW), its peak learning
    rate, the warmup (warmup_steps steps, or None: FINE_TUNE_WARMUP of the budget), the decay after it (cosine or
    wsd, down to lr * min_lr_ratio), weight decay on the matrices, and the gradient-norm clip. Training takes
    TrainConfig.recipe(); joint adaptation and test-time training take fine_tune_recipe(lr)."""

    lr: float
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"  # cosine | wsd
    decay_fraction: float = 0.2  # (wsd) the last part of the budget that decays
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adamw | muon
    muon_lr: float = MUON_LR
    grad_clip: float = 1.0  # 0: no clipping

    def optimizer_for(self, model: torch.nn.Module) -> torch.optim.AdamW | MuonAndAdamW:
        """The optimiser of the model's trainable parameters (make_optimizer)."""
        return make_optimizer(model, self.lr, self.weight_decay, self.optimizer, self.muon_lr)

    def schedule_for(self, max_steps: int = 0, seconds: float | None = None) -> Schedule:
        """The learning rate over a budget of max_steps steps (0: none) and/or `seconds` of training (None: none)."""
        if self.warmup_steps is not None:
            warmup, share = self.warmup_steps, 0.0
        else:  # a share of the budget: of the steps (at least one), and of the seconds if they run out first
            warmup, share = max(1, math.floor(max_steps * FINE_TUNE_WARMUP + 1e-9)), FINE_TUNE_WARMUP
        return Schedule(self.lr, warmup, self.min_lr_ratio, self.schedule, self.decay_fraction, max_steps, seconds,
                        share)


def fine_tune_recipe(lr: float) -> Recipe:
    """Adaptation's and test-time training's recipe: AdamW at peak lr, warmup over a tenth of the budget, cosine to
    a tenth, no weight decay (a few hundred steps from a checkpoint leave decay nothing to tame, and the table
    rows of other tasks must not move), gradients clipped at 1."""
    return Recipe(lr)


# --------------------------------------------------------------------------------------------------
# The optimiser step
# --------------------------------------------------------------------------------------------------


def optimizer_step(
    forward: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer | MuonAndAdamW,
    params: list[torch.nn.Parameter],
    micro_batches: list[Batch],
    grad_clip: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    world: World = SINGLE,
) -> float:
    """One optimiser step on micro_batches (arc.layouts.rows.Batch: inputs and targets of (B, T) token ids with
    IGNORE where a position has no target, and each row's task and transform ids; packed batches also
    say which row each token belongs to); returns the step's loss, the mean cross-entropy per target token.

    The loss is summed over the target tokens of every micro-batch and divided once by their total, so
    the step's gradient is a mean per output token however the tokens fall into micro-batches (a mean
    per micro-batch would weigh a token of a short batch more). Each micro-batch is backpropagated on
    its own, so only one micro-batch's activations are held at a time. Then the global gradient norm
    of params is clipped to grad_clip (0: no clipping), the optimizer steps and the gradients are freed.

    Data-parallel (world, arc.infra.distributed; forward wrapped in DDP): micro_batches are this rank's share
    of the global batch; the total is the global batch's target count, the loss is multiplied by the
    world size because DDP averages the ranks' gradients (so the gradient stays the mean per target
    token of the global batch), gradients are all-reduced once, after the last micro-batch, and the
    loss returned is the global batch's.
    """
    n_targets = world.sum(sum(int((batch.targets != IGNORE).sum()) for batch in micro_batches))
    loss_sum = 0.0
    for i, batch in enumerate(micro_batches):
        batch = batch.to(device)
        packed = {} if batch.segments is None else {"segments": batch.segments}  # which row each token is in
        with world.deferred_sync(forward, last=i == len(micro_batches) - 1):
            with autocast(device.type, amp_dtype):
                logits = forward(batch.inputs, task=batch.task, transform=batch.transform, **packed)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE,
                                   reduction="sum") / n_targets
            (loss * world.size).backward()  # x 1 without torchrun: exact, the single-process arithmetic is unchanged
        loss_sum += loss.item()
    loss_sum = world.sum(loss_sum)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum
