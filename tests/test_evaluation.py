"""arc.inference.evaluation: exact scoring known answers, invalid outputs, and evaluate() writing results.json."""
import argparse
import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from arc.data.tasks import Example, Pair, Task, load_tasks
from arc.inference import evaluation
from arc.inference.config import DecodeConfig, EvalConfig
from arc.inference.evaluation import evaluate, score_tasks
from arc.inference.predict import Prediction
from arc.inference.submission import validate_submission
from arc.infra.config import add_config_flags, build_config, given_flags
from arc.infra.errors import CheckpointError, ConfigError, DivergenceError
from arc.model import checkpoint
from arc.model.checkpoint import load_model, save_checkpoint


def predict_greedy(model, tok, examples, max_len, batch_size=8):
    return predict(model, tok, examples, max_len, DecodeConfig(decode_batch_size=batch_size))
from conftest import TINY, bigram_model, g, predict, write_tasks

from arc.data.tokenizer import END, OUTPUT, ROW, GridTokenizer
from arc.layouts.in_context import InContextLayout
from arc.model.config import DEFAULT_TARGETS
from arc.model.lora import add_lora
from arc.model.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")



def task(task_id: str, outputs: list) -> Task:
    return Task(task_id, [Pair(g([[1]]), g([[2]]))], [Pair(g([[i]]), None if o is None else g(o)) for i, o in enumerate(outputs)])


def predictions(t: Task, attempts: list, status: str = "ok") -> list[Prediction]:
    return [Prediction(ex, [g(a) for a in atts], status) for ex, atts in zip(t.examples(), attempts)]


def test_score_tasks_known_answers():
    half = task("half", [[[5, 6]], [[7], [8]]])  # two test inputs
    full = task("full", [[[3]]])
    wrong = task("wrong", [[[4, 4], [4, 4]]])
    preds = (
        predictions(half, [[[[5, 6]]], [[[7, 8]]]])  # first right; second has the right cells, wrong shape
        + predictions(full, [[[[9]], [[3]]]])  # the second attempt is right
        + predictions(wrong, [[[[4, 4]]]])  # a prefix of the truth is wrong
    )
    results = score_tasks([half, full, wrong], preds)
    assert results["tasks"]["half"]["score"] == 0.5
    assert [t["correct"] for t in results["tasks"]["half"]["tests"]] == [True, False]
    assert results["tasks"]["full"]["score"] == 1.0
    assert results["tasks"]["wrong"]["score"] == 0.0
    assert results["tasks_total"] == 3 and results["tasks_scored"] == 3
    assert results["tasks_solved"] == 1  # 0.5 is not solved
    assert results["score"] == pytest.approx(0.5)  # mean of 0.5, 1.0, 0.0
    assert results["tasks"]["full"]["tests"][0]["attempts"] == [[[9]], [[3]]]
    json.dumps(results)  # serialisable as is


def test_test_order_follows_test_index_not_prediction_order():
    half = task("half", [[[5]], [[6]]])
    preds = predictions(half, [[[[5]]], [[[0]]]])
    results = score_tasks([half], preds[::-1])
    assert [t["correct"] for t in results["tasks"]["half"]["tests"]] == [True, False]


def test_invalid_output_is_wrong_and_unknown_truth_is_unscored():
    t = task("t", [[[1]]])
    invalid = Prediction(t.examples()[0], [], "no valid output (no end token (hit the length limit))")
    assert invalid.correct is False
    results = score_tasks([t, task("hidden", [None])], [invalid] + predictions(task("hidden", [None]), [[[[1]]]]))
    assert results["tasks"]["t"]["score"] == 0.0
    assert results["tasks"]["t"]["tests"][0]["status"].startswith("no valid output")
    assert results["tasks"]["hidden"]["score"] is None and results["tasks"]["hidden"]["tests"][0]["correct"] is None
    assert (results["tasks_total"], results["tasks_scored"], results["score"]) == (2, 1, 0.0)


def test_scores_count_known_outputs_only_and_each_attempt_rule():
    mixed = task("mixed", [[[1]], None, [[2]]])  # the second test output is unknown
    preds = predictions(mixed, [[[[0]], [[1]]], [[[5]]], [[[0]]]])
    preds[0].attempts_by = {"vote": [g([[1]])], "poe": [g([[0]])]}
    results = score_tasks([mixed, task("hidden", [None])], preds + predictions(task("hidden", [None]), [[[[1]]]]))
    assert results["tasks"]["mixed"]["score"] == 0.5  # of the two known: the first (by attempt_2), not the third
    assert results["score"] == 0.5 and results["tasks_scored"] == 1
    assert results["score_pass1"] == 0.0  # the first attempts are all wrong
    assert results["score_by_selection"] == {"poe": 0.0, "vote": 0.5}
    nothing_known = score_tasks([task("hidden", [None])], predictions(task("hidden", [None]), [[[[1]]]]))
    assert (nothing_known["score"], nothing_known["score_pass1"], nothing_known["tasks_scored"]) == (None, None, 0)


# demo [[1,2]] -> [[3],[4]]; test [[5]] -> [[6,7]]: prompt ends at the test's O
SMALL = Example("small", 0, [Pair(g([[1, 2]]), g([[3], [4]]))], Pair(g([[5]]), g([[6, 7]])))


def test_predict_greedy_with_rigged_models():
    tok = InContextLayout(GridTokenizer())
    right = bigram_model({OUTPUT: 6, 6: 7, 7: ROW, ROW: END})  # writes "67\nE"
    [p] = predict_greedy(right, tok, [SMALL], max_len=TINY.max_seq_len)
    assert (p.status, p.prompt_tokens, p.correct) == ("ok", 15, True)
    assert p.attempts[0].tolist() == [[6, 7]]

    unterminated = bigram_model({OUTPUT: 6, 6: END})  # writes "6E": not a grid
    [p] = predict_greedy(unterminated, tok, [SMALL], max_len=TINY.max_seq_len)
    assert (p.status, p.attempts, p.correct) == ("no valid output (last row is not terminated)", [], False)

    endless = bigram_model({OUTPUT: 6})  # writes 6 6 6 ... until the context is full
    [p] = predict_greedy(endless, tok, [SMALL], max_len=40)
    assert p.status == "no valid output (no end token (hit the length limit))" and not p.correct

    too_long = predict_greedy(right, tok, [SMALL], max_len=10)
    assert too_long[0].status == "too long for the context" and too_long[0].correct is False


def test_predict_greedy_batches_keep_each_example_in_place():
    tok = InContextLayout(GridTokenizer())
    model = bigram_model({OUTPUT: 6, 6: 7, 7: ROW, ROW: END})
    long_demo = Pair(g([[1] * 5] * 4), g([[2] * 5] * 4))
    examples = [  # prompts of different lengths: they are sorted by length for batching
        Example("a", 0, [long_demo, long_demo], Pair(g([[5]]), g([[6, 7]]))),
        SMALL,
        Example("c", 0, [long_demo], Pair(g([[5]]), g([[0]]))),
    ]
    preds = predict_greedy(model, tok, examples, max_len=TINY.max_seq_len, batch_size=2)
    assert [p.example.task_id for p in preds] == ["a", "small", "c"]
    assert [p.correct for p in preds] == [True, True, False]
    # "a" keeps one demonstration: two (1 + 2 * 51 + 4 = 107 prompt tokens) plus an answer budget of the
    # largest demonstration output (4 * 6 + 1 = 25 tokens) would exceed max_len 128
    assert [p.prompt_tokens for p in preds] == [56, 15, 56]  # 1 + 51 + 4, 1 + 10 + 4, 1 + 51 + 4


def test_prediction_does_not_depend_on_the_hidden_answer():
    tok = InContextLayout(GridTokenizer())
    model = bigram_model({OUTPUT: 6, 6: ROW, ROW: END})
    demo = Pair(g([[1]]), g([[2]]))
    big_truth = Example("x", 0, [demo], Pair(g([[3]]), g(np.zeros((5, 5), dtype=int))))  # answer: 31 tokens
    hidden = Example("x", 0, [demo], Pair(g([[3]]), None))
    # prompt: B I1\nO 2\nE I3\nO = 12 tokens; the demo-based budget is 3 tokens (15 in all) < max_len 30
    [with_truth], [without] = (predict_greedy(model, tok, [ex], max_len=30) for ex in (big_truth, hidden))
    assert (without.status, without.prompt_tokens) == ("ok", 12)
    assert (with_truth.status, with_truth.prompt_tokens) == (without.status, without.prompt_tokens)


@pytest.fixture
def untrained_checkpoint(tmp_path) -> str:
    torch.manual_seed(0)
    model = Transformer(TINY)
    save_checkpoint(tmp_path / "untrained", model, {"model": asdict(TINY), "step": 0}, GridTokenizer())
    return str(tmp_path / "untrained")


def eval_tasks(tmp_path) -> str:
    rng = np.random.default_rng(0)

    def pair(h, w):
        grid = rng.integers(0, 10, size=(h, w))
        return {"input": grid.tolist(), "output": (9 - grid).tolist()}

    return write_tasks(tmp_path / "eval_data", {
        "aaa": {"train": [pair(2, 2), pair(3, 2)], "test": [pair(2, 3)]},
        "bbb": {"train": [pair(1, 3)], "test": [pair(2, 2), pair(1, 1)]},
    })


def test_evaluate_untrained_checkpoint_writes_results_json(untrained_checkpoint, tmp_path):
    out = tmp_path / "eval_out"
    cfg = EvalConfig(checkpoint=untrained_checkpoint, data=eval_tasks(tmp_path), task_set="all",
                     device="cpu", precision="fp32", out=str(out))
    returned = evaluate(cfg)
    results = json.loads((out / "results.json").read_text())
    assert {"tasks_total", "tasks_solved", "score", "eval_loss", "tasks"} <= results.keys()
    assert (results["tasks_total"], results["tasks_solved"], results["score"]) == (2, 0, 0.0)
    assert results["step"] == 0
    # an untrained model's logits are near zero: the loss per output token is about ln(16)
    assert abs(results["eval_loss"] - math.log(16)) < 0.1
    assert sorted(results["tasks"]) == ["aaa", "bbb"]
    tests = results["tasks"]["bbb"]["tests"]
    assert len(tests) == 2 and all(t["correct"] is False for t in tests)
    assert all(t["status"] == "ok" or t["status"].startswith("no valid output") for t in tests)
    assert all(isinstance(t["attempts"], list) and t["prompt_tokens"] > 0 for t in tests)
    assert returned["score"] == results["score"]
    assert not list(out.glob("*.tmp"))
    # the submission file is complete (two attempts per test input) and in the ARC Prize format
    submission = json.loads((out / "submission.json").read_text())
    validate_submission(submission, load_tasks(cfg.data))
    assert [len(submission[k]) for k in ("aaa", "bbb")] == [1, 2]


def test_evaluate_selected_ids_and_max_tasks(untrained_checkpoint, tmp_path):
    data = eval_tasks(tmp_path)
    common = dict(checkpoint=untrained_checkpoint, data=data, device="cpu", precision="fp32")
    assert evaluate(EvalConfig(**common, tasks=("bbb",), out=str(tmp_path / "o1")))["tasks_total"] == 1
    assert list(evaluate(EvalConfig(**common, task_set="all", max_tasks=1, out=str(tmp_path / "o2")))["tasks"]) == ["aaa"]


def test_evaluate_adapter_alone_uses_and_records_its_base(untrained_checkpoint, tmp_path, monkeypatch):
    model, tok, _ = load_model(untrained_checkpoint)
    add_lora(model, rank=2, alpha=32.0)
    lora = {"rank": 2, "alpha": 32.0, "dropout": 0.0, "targets": list(DEFAULT_TARGETS)}
    adapter = str(tmp_path / "lora")
    save_checkpoint(adapter, model, {"model": asdict(TINY), "step": 0, "base": untrained_checkpoint, "lora": lora}, tok, lora=True)
    monkeypatch.chdir(tmp_path / "lora")  # no checkpoints/ folder here: nothing to fall back on
    common = dict(adapter=adapter, data=eval_tasks(tmp_path), task_set="all", device="cpu", precision="fp32")
    results = evaluate(EvalConfig(**common, out=str(tmp_path / "o1")))
    assert (results["checkpoint"], results["adapter"]) == (untrained_checkpoint, adapter)
    assert json.loads((tmp_path / "o1" / "results.json").read_text())["checkpoint"] == untrained_checkpoint
    with pytest.raises(ValueError, match="was trained on"):
        evaluate(EvalConfig(**common, checkpoint=adapter, out=str(tmp_path / "o2")))
    with pytest.raises(CheckpointError, match="not a LoRA run folder"):
        evaluate(EvalConfig(**{**common, "adapter": untrained_checkpoint}, out=str(tmp_path / "o3")))


def test_evaluate_refuses_an_unwritable_out_before_decoding(untrained_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(evaluation, "predict_stage", lambda *a, **k: pytest.fail("decoded before checking --out"))
    with pytest.raises(ConfigError, match="--out .*a_file/out: cannot write there"):
        evaluate(EvalConfig(checkpoint=untrained_checkpoint, data=eval_tasks(tmp_path), task_set="all", device="cpu",
                            out=str(tmp_path / "a_file" / "out")))


def test_a_non_finite_eval_loss_is_refused_and_nothing_written(untrained_checkpoint, tmp_path, monkeypatch):
    """Weights are checked finite when loaded; outputs that still overflow are refused, not written as null."""
    monkeypatch.setattr(evaluation, "row_nll", lambda model, rows, *a: (np.full(len(rows), np.nan), np.ones(len(rows))))
    with pytest.raises(DivergenceError, match="the eval loss is nan: the model's outputs are not finite numbers"):
        evaluate(EvalConfig(checkpoint=untrained_checkpoint, data=eval_tasks(tmp_path), task_set="all", device="cpu",
                            out=str(tmp_path / "out")))
    assert not (tmp_path / "out" / "results.json").exists()


def test_results_name_what_was_loaded_and_the_submission_they_go_with(untrained_checkpoint, tmp_path):
    out = tmp_path / "o"
    results = evaluate(EvalConfig(checkpoint=untrained_checkpoint, data=eval_tasks(tmp_path), task_set="all",
                                  device="cpu", precision="fp32", out=str(out)))
    assert results["loaded"] == {"checkpoint": str(Path(untrained_checkpoint) / "step-000000"), "adapter": None, "step": 0}
    written = json.loads((out / "results.json").read_text())
    assert written["submission_sha256"] == hashlib.sha256((out / "submission.json").read_bytes()).hexdigest()


def test_a_run_folder_still_being_trained_into_is_evaluated_at_the_step_it_read(untrained_checkpoint, tmp_path,
                                                                               monkeypatch):
    """evaluate.py --checkpoint <run folder> while train.py --save-every 1 saves into it: the trainer commits a
    newer step folder and deletes the one the evaluation chose before its weights are read (here at that
    very instant, twice in a row). The newest step is read, and recorded."""
    real = checkpoint.weights_step

    def trainer_saves_meanwhile(path):
        step = int(path.parent.name.removeprefix("step-"))
        if step < 2:
            save_checkpoint(untrained_checkpoint, Transformer(TINY), {"model": asdict(TINY), "step": step + 1},
                            GridTokenizer())  # commits step-00000<step + 1>, then removes the chosen one
        return real(path)

    monkeypatch.setattr(checkpoint, "weights_step", trainer_saves_meanwhile)
    results = evaluate(EvalConfig(checkpoint=untrained_checkpoint, data=eval_tasks(tmp_path), task_set="all",
                                  device="cpu", precision="fp32", out=str(tmp_path / "o")))
    newest = str(Path(untrained_checkpoint) / "step-000002")
    assert results["loaded"] == {"checkpoint": newest, "adapter": None, "step": 2}


def test_evaluate_with_unknown_test_outputs_writes_results(untrained_checkpoint, tmp_path):
    data = write_tasks(tmp_path / "hidden", {"x": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}})
    out = tmp_path / "eval_out"
    evaluate(EvalConfig(checkpoint=untrained_checkpoint, data=data, task_set="all", device="cpu",
                        precision="fp32", out=str(out)))
    results = json.loads((out / "results.json").read_text())
    assert results["score"] is None and results["tasks"]["x"]["tests"][0]["correct"] is None


def test_eval_cli_flags():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, EvalConfig)
    given = given_flags(parser.parse_args(["--tasks", "a1,b2", "--max-tasks", "3", "--context-tokens", "256",
                                           "--views", "4", "--ttt-steps", "2", "--ttt-rank", "8"]), EvalConfig)
    assert given == {"tasks": ("a1", "b2"), "max_tasks": 3, "context_tokens": 256, "decoding": {"views": 4},
                     "ttt": {"steps": 2, "lora": {"rank": 8}}}
    config = build_config(EvalConfig, given)
    assert (config.decoding.views, config.ttt.lora.rank, config.ttt.lora.alpha, config.ttt.lr) == (4, 8, 32.0, 1e-3)
    assert given_flags(parser.parse_args([]), EvalConfig) == {}


def test_evaluate_with_test_time_training_dfs_and_poe(untrained_checkpoint, tmp_path, one_thread):
    from arc.inference.config import DecodeConfig, TTTConfig
    cfg = EvalConfig(checkpoint=untrained_checkpoint, data=eval_tasks(tmp_path), task_set="all", device="cpu",
                     precision="fp32", out=str(tmp_path / "ttt"),
                     decoding=DecodeConfig(decode="dfs", views=2, select="poe", dfs_threshold=0.5),
                     ttt=TTTConfig(steps=2, batch_size=2), compile=False)
    results = evaluate(cfg)
    # "aaa" has 2 demonstrations (leave-one-out works), "bbb" only 1 (test-time training is skipped)
    assert results["tasks"]["aaa"]["ttt"]["steps"] == 2 and results["tasks"]["bbb"]["ttt"]["skipped"]
    assert all(entry["seconds"] > 0 for entry in results["tasks"].values())
    assert results["ttt"]["steps"] == 2 and results["decoding"]["decode"] == "dfs"
    validate_submission(json.loads((tmp_path / "ttt" / "submission.json").read_text()), load_tasks(cfg.data))


def test_per_task_losses_keep_the_eval_loss(tiny_model, tmp_path):
    from arc.training.scoring import grouped_loss, output_token_loss
    tasks = load_tasks(eval_tasks(tmp_path))
    tok = InContextLayout(GridTokenizer())
    rows = {t.id: tok.scored_rows(t.examples(), TINY.max_seq_len)[0] for t in tasks}
    flat, groups = [r for rs in rows.values() for r in rs], [k for k, rs in rows.items() for _ in rs]
    overall, per_task = grouped_loss(tiny_model, flat, groups)
    assert overall == output_token_loss(tiny_model, flat)  # bitwise: the same batches, summed the same way
    assert per_task["aaa"] == output_token_loss(tiny_model, rows["aaa"])
    assert set(per_task) == {"aaa", "bbb"} and min(per_task.values()) <= overall <= max(per_task.values())


def test_search_without_ttt_goes_task_by_task_with_the_same_views(tmp_path, capsys):
    from arc.data.tasks import select_tasks
    from arc.model.checkpoint import load_model
    checkpoint = tmp_path / "bigram"  # writes "67\nE": [[6, 7]], mapped back through each view's inverse
    save_checkpoint(checkpoint, bigram_model({OUTPUT: 6, 6: 7, 7: ROW, ROW: END}), {"model": asdict(TINY), "step": 1}, GridTokenizer())
    decoding = DecodeConfig(decode="dfs", views=4, dfs_threshold=0.5, dfs_max_candidates=2)
    out = tmp_path / "dfs"
    results = evaluate(EvalConfig(checkpoint=str(checkpoint), data=eval_tasks(tmp_path), task_set="all", device="cpu",
                                  precision="fp32", out=str(out), decoding=decoding))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split()[:2] for line in lines] == [["[1/2]", "aaa"], ["[2/2]", "bbb"]]
    assert all("solved so far" in line and "eta" in line for line in lines)
    # the views each example gets are those of predicting all examples together (as before)
    model, tok, _ = load_model(checkpoint, "cpu")
    tasks = select_tasks(load_tasks(eval_tasks(tmp_path)), task_set="all")
    together = predict(model.eval(), InContextLayout(tok), [e for t in tasks for e in t.examples()], TINY.max_seq_len, decoding)
    assert [t["attempts"] for k in ("aaa", "bbb") for t in results["tasks"][k]["tests"]] == \
        [[a.tolist() for a in p.attempts] for p in together]
    assert (out / "report.html").read_text().count('<section class="card') == 2


def test_default_checkpoint_is_the_newest_run_else_the_shipped_one(tmp_path):
    import os

    from arc.inference.evaluation import newest_checkpoint
    for name, mtime in (("base", 300), ("pair", 200), ("run-a", 100), ("run-b", 150)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        os.utime(tmp_path / name / "config.json", (mtime, mtime))
    assert newest_checkpoint(str(tmp_path)) == str(tmp_path / "run-b")  # shipped ones never count as newer
    for name in ("run-a", "run-b"):
        (tmp_path / name / "config.json").unlink()
    assert newest_checkpoint(str(tmp_path)) == str(tmp_path / "pair")  # then the pair-layout model
    (tmp_path / "pair" / "config.json").unlink()
    assert newest_checkpoint(str(tmp_path)) == str(tmp_path / "base")
    (tmp_path / "base" / "config.json").unlink()
    with pytest.raises(ConfigError, match="python train.py"):
        newest_checkpoint(str(tmp_path))
