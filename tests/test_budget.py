"""evaluate.py --minutes (issue 29), with known answers: the rule's seconds on a fake clock, the fine-tune schedule
on the clock, a tiny model's budgeted run that ends in time with every stage run, a budget too small for any step
(a clear message, a valid submission), a killed adaptation resumed bitwise, and the leak guard of adaptation's,
replay's and test-time training's rows."""
import json
import time

import numpy as np
import pytest
import torch
from conftest import TINY, random_task, write_tasks
from safetensors.torch import load_file

from arc.data.tasks import load_tasks, parse_task
from arc.data.tokenizer import GridTokenizer
from arc.inference import adapt as adapt_module
from arc.inference.budget import Budget
from arc.inference.config import AdaptConfig, DecodeConfig, EvalConfig, TTTConfig
from arc.inference.evaluation import evaluate
from arc.inference.submission import validate_submission
from arc.layouts.config import LayoutConfig
from arc.layouts.pair import PairLayout
from arc.model.checkpoint import checkpoint_dir, read_config
from arc.training.config import TrainConfig
from arc.training.optim import fine_tune_recipe
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_rule_on_a_fake_clock(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(Budget, "now", staticmethod(lambda: clock[0]))
    budget = Budget(1800.0, adapt_share=0.3)  # 30 minutes: margin 20 + 1% = 38 s
    assert budget.margin() == 38.0 and budget.left() == 1762.0
    # adaptation: 30% of what is left less the predictions' estimate (0.001 s per answer token before any decode)
    assert budget.adaptation_seconds(10_000) == pytest.approx(0.3 * (1762 - 10))
    clock[0] += 562.0  # 562 s spent: 1200 left for 20 tasks, 60 each, less this task's estimate
    assert budget.task_seconds(20, 1000) == pytest.approx(60 - 1.0)
    budget.predicted(2.0, 4000)  # measured: 0.0005 s per answer token
    assert budget.task_seconds(20, 1000) == pytest.approx(60 - 0.5)
    clock[0] += 1200.0  # nothing left: no test-time training, no prediction
    assert budget.task_seconds(5, 1000) == 0.0 and not budget.can_predict(1000)
    assert Budget(None, 0.3).task_seconds(5, 1000) is None and Budget(None, 0.3).can_predict(10**9)
    # views: 32 while their first estimate fits in a quarter of the budget (seed20: 7,249 answer tokens a view,
    # 232 s of 1,800), else 8 (the 400 tasks: 184,308 a view, 5,898 s)
    assert budget.views(32, 8, 7249) == 32 and budget.views(32, 8, 184_308) == 8
    resumed = Budget(120.0, 0.3, spent_before=100.0)  # a resumed run counts what its killed process spent
    assert resumed.left() == pytest.approx(120 - 12 - 1.2 - 100)


def test_a_fine_tune_schedule_follows_the_clock_where_the_seconds_bind():
    """10**6 steps or 3 s: the warmup ends after 0.3 s (not after 10**5 steps), the cosine reaches its middle at
    1.65 s and its floor at 3 s; a budget of steps alone is today's lr_at, bitwise."""
    schedule = fine_tune_recipe(1e-3).schedule_for(10**6, 3.0)
    assert schedule.lr(0, 0.0) == pytest.approx(1e-8) and schedule.lr(5, 0.15) == pytest.approx(5e-4)
    assert [schedule.lr(s, t) for s, t in ((10, 0.3), (50, 1.65), (90, 3.0))] == pytest.approx([1e-3, 5.5e-4, 1e-4])
    steps_only = fine_tune_recipe(1e-3).schedule_for(100)
    assert steps_only.warmup_steps == 10 and steps_only.lr(55) == pytest.approx(5.5e-4)


@pytest.fixture
def pair_run(tmp_path):
    """A tiny pair-layout checkpoint trained 4 steps on 2 tasks (t0, t1) and one evaluated task's demonstrations,
    and a folder of 2 tasks it never saw (n0, n1) with their test outputs."""
    rng = np.random.default_rng(7)
    train_dir = write_tasks(tmp_path / "train", {f"t{i}": random_task(rng) for i in range(2)})
    seen_dir = write_tasks(tmp_path / "seen", {"seen": random_task(rng)})
    new_dir = write_tasks(tmp_path / "new", {f"n{i}": random_task(rng, n_train=3) for i in range(2)})
    cfg = TrainConfig(layout=LayoutConfig(name="pair"), data=train_dir, eval_data=seen_dir, eval_set="all",
                      model=TINY, max_steps=4, warmup_steps=1, compile=False, device="cpu", precision="fp32",
                      log_every=1000, eval_every=1000, out=str(tmp_path / "run"))
    return str(train(cfg)), new_dir


def budgeted(checkpoint: str, data: str, out, **settings) -> EvalConfig:
    base = dict(checkpoint=checkpoint, data=data, device="cpu", precision="fp32", compile=False, out=str(out),
                decoding=DecodeConfig(views=2))
    return EvalConfig(**{**base, **settings})


def test_a_budgeted_run_ends_in_time_with_every_stage_run(pair_run, tmp_path):
    checkpoint, new_dir = pair_run
    began = time.time()
    results = evaluate(budgeted(checkpoint, new_dir, tmp_path / "b", minutes=0.15, adapt_share=0.4,
                                adapt=AdaptConfig(train="full", replay=0.5, lr=1e-3)))
    wall = time.time() - began
    assert wall <= 0.15 * 60 + 1.0  # within the 9 s (scoring and writing a tiny model's results: well under 1 s)
    assert results["adapt"]["tasks"] == 2 and results["adapt"]["steps"] > 0 and results["adapt"]["replay_tasks"] == 3
    assert all(results["tasks"][t]["ttt"]["steps"] > 0 for t in ("n0", "n1")) and not results["not_predicted"]
    validate_submission(json.loads((tmp_path / "b" / "submission.json").read_text()), load_tasks(new_dir))
    assert results["minutes"] == 0.15 and "budget" in (tmp_path / "b" / "report.html").read_text()


def test_the_default_split_adapts_unseen_tasks_and_trains_known_ones_alone(pair_run, tmp_path):
    """--adapt-share 1 (the default): unseen tasks get the whole budget's joint adaptation and no per-task training;
    a set the checkpoint knows every task of gets per-task test-time training instead."""
    checkpoint, new_dir = pair_run
    unseen = evaluate(budgeted(checkpoint, new_dir, tmp_path / "unseen", minutes=0.1))
    assert unseen["adapt"]["steps"] > 0 and unseen["ttt"] is None and "ttt" not in unseen["tasks"]["n0"]
    known = evaluate(budgeted(checkpoint, str(tmp_path / "seen"), tmp_path / "known", minutes=0.1))
    assert known["adapt"] is None and known["tasks"]["seen"]["ttt"]["steps"] > 0


def test_a_budget_too_small_for_any_step_says_so_and_still_writes_a_valid_submission(pair_run, tmp_path, capsys):
    checkpoint, new_dir = pair_run
    results = evaluate(budgeted(checkpoint, new_dir, tmp_path / "tiny", minutes=0.001))  # 0.06 s: gone before the model is loaded
    said = capsys.readouterr().out
    assert "too little for a step: the 2 new task rows stay at the mean of the trained rows" in said
    assert results["adapt"]["steps"] == 0 and sorted(results["not_predicted"]) == ["n0", "n1"]
    assert "not predicted (2 tasks): the budget ran out" in said
    submission = json.loads((tmp_path / "tiny" / "submission.json").read_text())
    validate_submission(submission, load_tasks(new_dir))
    tasks = {t.id: t for t in load_tasks(new_dir)}  # the attempts of a task the time did not reach: its test input
    assert submission["n0"][0]["attempt_1"] == tasks["n0"].test[0].input.tolist()


def test_a_killed_adaptation_resumes_to_the_same_results(pair_run, tmp_path, monkeypatch):
    """Step-bounded: 6 adaptation steps saved every 2, killed after step 4's save; --resume continues from it, and
    the adapted weights, the attempts and submission.json are bitwise those of the run that was never killed."""
    checkpoint, new_dir = pair_run
    settings = dict(adapt=AdaptConfig(steps=6, save_every=2, train="full", replay=0.5, lr=1e-3),
                    ttt=TTTConfig(steps=2))
    evaluate(budgeted(checkpoint, new_dir, tmp_path / "whole", **settings))
    real_save = adapt_module._save

    def killed_after_step_4(ad, step, finished):
        real_save(ad, step, finished)
        if step == 4:
            raise KeyboardInterrupt  # as a kill: nothing after this save happens
    monkeypatch.setattr(adapt_module, "_save", killed_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        evaluate(budgeted(checkpoint, new_dir, tmp_path / "killed", **settings))
    assert read_config(tmp_path / "killed" / "adapted")["step"] == 4
    monkeypatch.setattr(adapt_module, "_save", real_save)
    results = evaluate(budgeted(checkpoint, new_dir, tmp_path / "killed", resume=True, **settings))
    assert results["adapt"]["resumed_at"] == 4 and results["adapt"]["steps"] == 6
    weights = [load_file(checkpoint_dir(tmp_path / run / "adapted") / "model.safetensors") for run in ("whole", "killed")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (tmp_path / "whole" / "submission.json").read_bytes() == (tmp_path / "killed" / "submission.json").read_bytes()


def test_no_test_output_reaches_adaptation_replay_or_test_time_training(pair_run, tmp_path, monkeypatch):
    """Every row adaptation (with replay) and test-time training draw is a pair the evaluation may train on: a
    demonstration of an evaluated task, or a pair of the checkpoint's own tasks (its evaluated task's
    demonstrations only); never an evaluated task's test output, and replay only from the checkpoint's tasks."""
    checkpoint, new_dir = pair_run
    samplers = []
    real = PairLayout.demonstration_sampler

    def recorded(self, tasks, *args, **kwargs):
        sampler = real(self, tasks, *args, **kwargs)
        samplers.append(sampler)
        return sampler
    monkeypatch.setattr(PairLayout, "demonstration_sampler", recorded)
    evaluate(budgeted(checkpoint, new_dir, tmp_path / "leak", adapt=AdaptConfig(steps=3, train="full", replay=0.5),
                      ttt=TTTConfig(steps=2)))
    run = read_config(checkpoint)
    seen_test = [t for t in load_tasks(str(tmp_path / "seen")) if t.id == "seen"][0].test
    new = {t.id: t for t in load_tasks(new_dir)}
    forbidden = {(t_id, p.input.tobytes(), p.output.tobytes()) for t_id, t in new.items() for p in t.test}
    forbidden |= {("seen", p.input.tobytes(), p.output.tobytes()) for p in seen_test}
    replayed = {task_id for s in samplers for task_id, _ in s.groups[0]}
    assert replayed == set(run["task_ids"])  # t0, t1 and seen: the checkpoint's own tasks, no other
    for sampler in samplers:
        for group in sampler.groups:
            for task_id, pairs in group:
                assert all((task_id, p.input.tobytes(), p.output.tobytes()) not in forbidden for p in pairs)
    layout = PairLayout(GridTokenizer(), task_ids=["n0"])
    with pytest.raises(ValueError, match="still has a test output"):
        from arc.layouts.pair import PairSampler
        PairSampler(layout, [], [parse_task("n0", random_task(np.random.default_rng(1)), "t")], 128, 0)
