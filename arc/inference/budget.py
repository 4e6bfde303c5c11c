"""The clock of a budgeted evaluation (evaluate.py --minutes M), and the one rule that spends it.

From the command's start, M minutes hold everything: loading, joint adaptation, test-time training, prediction,
scoring and writing submission.json. The rule, applied as the run goes:

    views        the layout's budget views (32 for pair) while their decodes' first estimate fits in PREDICT_SHARE
                 of the budget, else its plain default (8): 400 tasks under 32 views would decode for hours
    margin       MARGIN_SECONDS (or a tenth of a budget shorter than ten times that) + MARGIN_SHARE of the budget
                 are kept for scoring and writing the files
    adaptation   when some tasks are unseen (no row in the task table): adapt_share of what is left then, less
                 the estimate of every task's prediction, for the joint adaptation of all of them at once
                 (arc.inference.adapt)
    per task     what is left is shared equally by the tasks still to do, recomputed as each one starts, so a
                 task that takes less than its share leaves the rest to those after it; its test-time training
                 gets its share less the estimate of its prediction (the decode time measured so far per token
                 of the answer limit, PREDICT_GUESS before any was measured)
    out of time  a task whose turn comes after the time is gone is not predicted: its attempts are its test
                 input, so submission.json stays valid (and such an attempt is scored as it is); the summary
                 line and results.json say how many

A resumed run (--resume) continues the same budget: what the killed run had spent is saved in --out
(progress.json) and counted, less the time lost between its last save and the kill.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

MARGIN_SECONDS = 20.0  # scoring, the eval loss and writing the three files: seconds on any set ...
MARGIN_SHARE = 0.01  # ... plus this share of the budget (400 tasks take longer to score and draw than 20)
# seconds per token of answer limit (views x tokens) before a decode was measured: 32 views of the shipped model
# decoded tune20 at 0.0004 s per view-token on one fp32 thread (0.0011 for its largest task); the guess leaves
# room for a slower machine, and time it leaves unused under --adapt-share 1 is lost (RESULTS.md)
PREDICT_GUESS = 0.001
PREDICT_SHARE = 0.25  # the most of the budget the decodes' first estimate may take under the budget's views


@dataclass
class Budget:
    """A deadline and the rule above. `seconds` None: no budget (every method says so: no limit)."""

    now = staticmethod(time.time)  # the clock read (tests put a fake one here)

    seconds: float | None
    adapt_share: float
    spent_before: float = 0.0  # seconds a resumed run's earlier processes spent
    started: float = field(default_factory=lambda: Budget.now())
    decode_seconds: float = 0.0  # prediction time measured so far ...
    decode_tokens: int = 0  # ... and the answer-limit tokens it decoded for
    not_predicted: list[str] = field(default_factory=list)  # tasks the time did not reach

    @property
    def bounded(self) -> bool:
        return self.seconds is not None

    def spent(self) -> float:
        """Seconds of the budget spent so far, earlier processes of a resumed run included."""
        return self.spent_before + self.now() - self.started

    def margin(self) -> float:
        """Seconds kept at the end for scoring and writing."""
        return min(MARGIN_SECONDS, self.seconds / 10) + MARGIN_SHARE * self.seconds if self.bounded else 0.0

    def left(self) -> float:
        """Seconds left before the margin (infinite without a budget)."""
        return self.seconds - self.margin() - self.spent() if self.bounded else float("inf")

    def views(self, budget_views: int, default_views: int, answer_tokens: int) -> int:
        """How many views to predict under: budget_views while their estimate (answer_tokens: every task's answer
        limit under one view) fits in PREDICT_SHARE of the budget, else default_views."""
        fits = budget_views * answer_tokens * PREDICT_GUESS <= PREDICT_SHARE * self.seconds
        return budget_views if fits else default_views

    def adaptation_seconds(self, answer_tokens: int) -> float | None:
        """The joint adaptation's seconds: adapt_share of what is left less the predictions' estimate (answer_tokens:
        every task's); None without a budget (the adaptation's own settings)."""
        if not self.bounded:
            return None
        return max(0.0, self.adapt_share * (self.left() - self.predict_estimate(answer_tokens)))

    def predict_estimate(self, answer_tokens: int) -> float:
        """Seconds a task's prediction should take, from the decodes measured so far."""
        rate = self.decode_seconds / self.decode_tokens if self.decode_tokens else PREDICT_GUESS
        return rate * answer_tokens

    def task_seconds(self, tasks_left: int, answer_tokens: int) -> float | None:
        """The next task's test-time training seconds: an equal share of what is left, less its prediction's
        estimate (None without a budget: its own settings)."""
        if not self.bounded:
            return None
        return max(0.0, self.left() / max(1, tasks_left) - self.predict_estimate(answer_tokens))

    def can_predict(self, answer_tokens: int) -> bool:
        """Whether the time left holds the next task's prediction."""
        return not self.bounded or self.left() >= self.predict_estimate(answer_tokens)

    def predicted(self, seconds: float, answer_tokens: int) -> None:
        """Record a prediction's time, for the next estimates."""
        self.decode_seconds += seconds
        self.decode_tokens += answer_tokens

    def words(self) -> str:
        """How much of the budget is spent, for the progress lines."""
        if not self.bounded:
            return ""
        return f"budget {self.spent() / 60:.1f} of {self.seconds / 60:g} min"
