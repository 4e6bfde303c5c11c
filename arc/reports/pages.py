"""What a person sees of a run, drawn with arc.reports.draw:

    report.html after an evaluation     a summary, then one card per task: demonstrations, test input,
                                        expected output, each attempt marked right or wrong (wrong
                                        cells outlined, wrong shapes and invalid outputs named)
    report.html in a training run       the loss curves, the throughput and the config (and loss.svg)
    evaluate.py --show                  each task's expected and predicted grids in the terminal
    Progress                            one line per task finished on long evaluations

Pages are self-contained (inline SVG and CSS, no script, no network), so they open anywhere, offline.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from html import escape
from pathlib import Path

import numpy as np

from arc.data.tasks import Task
from arc.infra.files import atomic_write_text
from arc.reports.draw import grid_ansi, grid_svg, line_chart, palette_css, side_by_side

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;background:#f4f4f4}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 4px}h3{font-size:13px;margin:8px 0 4px;color:#555}
.sub{color:#555;margin:0 0 12px}table.kv{border-collapse:collapse;margin:8px 0 12px;background:#fff}
.kv td{border:1px solid #ddd;padding:3px 8px;vertical-align:top}.kv td:first-child{color:#555}
.big{font-size:20px;font-weight:600}.chips a{display:inline-block;margin:2px;padding:1px 6px;border-radius:3px;
color:#fff;text-decoration:none;font:12px monospace}
.card{background:#fff;border-left:6px solid #FF4136;margin:12px 0;padding:8px 12px;border-radius:4px}
.solved{border-color:#2ECC40}.partial{border-color:#FF851B}.wrong{border-color:#FF4136}.unscored{border-color:#AAA}
.chips .solved{background:#2ECC40}.chips .partial{background:#FF851B}.chips .wrong{background:#FF4136}
.chips .unscored{background:#AAA}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:10px 18px}.pair{display:flex;align-items:center;gap:6px}
figure{margin:0;display:inline-flex;flex-direction:column;align-items:center}
figcaption{font-size:12px;color:#555;max-width:220px}
.grid{border:1px solid #555;background:#000}.x{fill:none;stroke:#fff;stroke-width:.12px}
.right figcaption{color:#1a8a2a;font-weight:600}.miss figcaption{color:#c0281c;font-weight:600}
.invalid{border:2px dashed #c0281c;color:#c0281c;padding:8px;max-width:260px;font-size:12px}
.meta{color:#555;margin:0 0 4px}.filter{margin:8px 0}.filter label{margin-right:14px;cursor:pointer}
#f-solved:checked~.cards .card:not(.solved),#f-unsolved:checked~.cards .card.solved{display:none}
svg text{font-family:sans-serif}"""


def _page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}{palette_css()}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _num(value, digits: int = 3, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _kv(rows: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def duration(seconds: float | None) -> str:
    """Seconds for people: 41s, 6m40s, 1h05m, 3d04h; n/a for what is no time (None, NaN, infinity)."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    s = int(round(seconds))
    if s < 3600:
        return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s < 86400 else f"{s // 86400}d{s % 86400 // 3600:02d}h"


def too_long(results: dict, before: str = "") -> str:
    """The test inputs whose prompt did not fit the context, in words ("" when none): the summary line and
    report.html say so, not only each task's status."""
    n = results.get("tests_too_long") or 0
    return f"{before}{n} test input(s) too long for the context: not predicted, counted wrong" if n else ""


def attempt_verdict(attempt: np.ndarray, truth: np.ndarray | None) -> tuple[bool | None, np.ndarray | None, str]:
    """(right, wrong-cell mask when the shapes match, a few words): how an attempt compares to the truth."""
    if truth is None:
        return None, None, "truth unknown"
    if attempt.shape != truth.shape:
        shapes = f"{attempt.shape[0]}x{attempt.shape[1]}, expected {truth.shape[0]}x{truth.shape[1]}"
        return False, None, f"wrong shape {shapes}"
    wrong = attempt != truth
    n = int(wrong.sum())
    return (True, None, "right") if n == 0 else (False, wrong, f"{n} of {wrong.size} cells wrong")


def ttt_words(ttt: dict) -> str:
    """A task's test-time training report (arc.inference.ttt.TTTReport as a dict) in a few words."""
    if ttt.get("skipped"):
        return f"test-time training skipped ({ttt['skipped']})"
    return (f"test-time training {ttt['steps']} steps, loss {_num(ttt['first_loss'])} -> "
            f"{_num(ttt['last_loss'])} ({duration(ttt['seconds'])})")


def adaptation_words(adapt: dict | None) -> str:
    """The joint adaptation's report (arc.inference.adapt.AdaptReport as a dict) in a few words."""
    if not adapt:
        return "none (every task has a row)"
    words = f"{adapt['tasks']} new task rows, {adapt['steps']} steps in {duration(adapt['seconds'])}"
    if adapt.get("replay_tasks"):
        words += f", rows replayed from {adapt['replay_tasks']} of the checkpoint's tasks"
    return words + (f", resumed at step {adapt['resumed_at']}" if adapt.get("resumed_at") is not None else "")


def budget_words(results: dict) -> str:
    if results.get("minutes") is None:
        return "none"
    missed = results.get("not_predicted") or []
    return (f"{results['minutes']:g} minutes; {duration(results.get('seconds_total', 0))} spent"
            + (f"; {len(missed)} tasks not predicted (out of time)" if missed else ""))


def task_status(entry: dict) -> str:
    score = entry.get("score")
    return "unscored" if score is None else "solved" if score == 1.0 else "partial" if score > 0 else "wrong"


# --------------------------------------------------------------------------------------------------
# The evaluation report
# --------------------------------------------------------------------------------------------------


def _figure(grid: np.ndarray, caption: str, cls: str = "", wrong: np.ndarray | None = None) -> str:
    return f'<figure class="{cls}">{grid_svg(grid, wrong)}<figcaption>{caption}</figcaption></figure>'


# ARC tasks show 2-10 demonstrations; a card draws at most this many, so a task of thousands (a 50 MB
# file) gives a page of a few hundred kB rather than of 700 MB
DEMOS_DRAWN = 12


def task_card(task: Task, entry: dict, shared_time: bool = False) -> str:
    """One task's card; shared_time: the tasks were decoded together, so its seconds are the run's mean."""
    status = task_status(entry)
    tests = entry["tests"]
    right = sum(bool(t["correct"]) for t in tests)
    meta = [f"{right}/{len(tests)} test outputs right", f"loss {_num(entry.get('loss'))} per output token",
            f"{entry['seconds']:.1f}s" + (" (mean over the tasks, decoded together)" if shared_time else "")
            if entry.get("seconds") is not None else ""]
    if entry.get("ttt"):
        meta.append(escape(ttt_words(entry["ttt"])))
    parts = [f'<section class="card {status}" id="t-{escape(task.id)}">',
             f'<h2>{escape(task.id)} &middot; {status.upper() if status == "solved" else status}</h2>',
             f'<p class="meta">{" &middot; ".join(m for m in meta if m)}</p>',
             "<h3>demonstrations</h3>", '<div class="row">']
    for k, pair in enumerate(task.train[:DEMOS_DRAWN]):
        parts.append(f'<div class="pair">{_figure(pair.input, f"input {k + 1}")}<span>&rarr;</span>'
                     f'{_figure(pair.output, f"output {k + 1}")}</div>')
    if len(task.train) > DEMOS_DRAWN:
        parts.append(f'<p class="meta">and {len(task.train) - DEMOS_DRAWN} more demonstrations, not drawn</p>')
    parts.append("</div>")
    for k, (pair, test) in enumerate(zip(task.test, tests)):
        mark = {True: "&#10003; right", False: "&#10007; wrong", None: "truth unknown"}[test["correct"]]
        parts += [f"<h3>test {k + 1} of {len(tests)}: {mark}</h3>", '<div class="row">',
                  _figure(pair.input, "test input")]
        parts.append(_figure(pair.output, "expected output") if pair.output is not None else
                     '<div class="invalid">expected output unknown</div>')
        for a, attempt in enumerate(test["attempts"]):
            grid = np.array(attempt, dtype=np.uint8)
            ok, wrong, words = attempt_verdict(grid, pair.output)
            votes = test["votes"][a] if a < len(test.get("votes", [])) else None
            caption = (f'{"&#10003;" if ok else "&#10007;" if ok is False else ""} attempt {a + 1}: {words}'
                       + (f" ({votes} vote{'s' * (votes != 1)})" if votes else ""))
            parts.append(_figure(grid, caption, "attempt " + ("right" if ok else "miss" if ok is False else ""), wrong))
        if not test["attempts"]:
            parts.append(f'<div class="invalid">&#10007; {escape(test["status"])}</div>')
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def eval_report_html(tasks: list[Task], results: dict) -> str:
    """The page: summary, an index of tasks coloured by status, a filter, then the cards (solved first)."""
    entries = results["tasks"]
    order = {"solved": 0, "partial": 1, "wrong": 2, "unscored": 3}
    shown = sorted((t for t in tasks if t.id in entries), key=lambda t: order[task_status(entries[t.id])])
    decoding = results.get("decoding") or {}
    ttt = results.get("ttt")
    where = escape(f"{results.get('adapter') or results.get('checkpoint')} (step {results.get('step')})")
    body = [f"<h1>ARC evaluation: {results['tasks_solved']}/{results['tasks_total']} tasks solved</h1>",
            f'<p class="sub">{where} on {escape(str(results.get("data")))}/{escape(str(results.get("split")))} '
            f'[{escape(str(results.get("task_set")))}]: {escape(str(results.get("method", "")))}</p>',
            _kv([("solved", f'<span class="big">{results["tasks_solved"]} / {results["tasks_total"]}</span>'
                  f' ({results.get("tasks_scored", 0)} with known answers)'),
                 ("score (official ARC)", f'<span class="big">{_num(results.get("score"))}</span>'
                  f' &middot; first attempts only {_num(results.get("score_pass1"))}'
                  + "".join(f" &middot; chosen by {escape(m)} {_num(v)}"
                            for m, v in results.get("score_by_selection", {}).items())),
                 ("eval loss", f"{_num(results.get('eval_loss'), 4)} per output token"),
                 *([("not predicted", escape(too_long(results)))] if too_long(results) else []),
                 ("time", f"{duration(results.get('seconds_total', 0))} in all, "
                          f"{results.get('seconds_per_task', 0):.1f}s per task"),
                 ("decoding", escape(", ".join(f"{k} {v}" for k, v in decoding.items()))),
                 ("test-time training", escape(", ".join(f"{k} {v}" for k, v in ttt.items())) if ttt else "off"),
                 ("adaptation", escape(adaptation_words(results.get("adapt")))),
                 ("budget", escape(budget_words(results)))]),
            '<p class="chips">' + "".join(f'<a class="{task_status(entries[t.id])}" href="#t-{escape(t.id)}">'
                                          f'{escape(t.id)}</a>' for t in shown) + "</p>"]
    shared = not ttt and decoding.get("decode") == "greedy"  # arc.inference.evaluation.predict_tasks batches these
    n_solved = sum(task_status(entries[t.id]) == "solved" for t in shown)
    body += ['<input type="radio" name="f" id="f-all" checked><label for="f-all"> all tasks (%d)</label>' % len(shown),
             '<input type="radio" name="f" id="f-solved"><label for="f-solved"> solved (%d)</label>' % n_solved,
             '<input type="radio" name="f" id="f-unsolved"><label for="f-unsolved"> not solved (%d)</label>'
             % (len(shown) - n_solved),
             '<main class="cards">'] + [task_card(t, entries[t.id], shared) for t in shown] + ["</main>"]
    return _page(f"ARC evaluation {results['tasks_solved']}/{results['tasks_total']}", body)


def write_eval_report(out: Path, tasks: list[Task], results: dict) -> Path:
    path = Path(out) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, eval_report_html(tasks, results))
    return path


# --------------------------------------------------------------------------------------------------
# The training report: rewritten at every save, from metrics.jsonl and the config the trainer saved
# --------------------------------------------------------------------------------------------------


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per metric ("loss", "eval_loss", "tokens_per_s", "lr"), its (step, value) points in log order
    (none when the file does not exist yet)."""
    series: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": [], "tokens_per_s": [], "lr": []}
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    for line in lines:
        record = json.loads(line)
        for name, points in series.items():
            if name in record:
                points.append((record["step"], record[name]))
    return series


def loss_chart(metrics: dict, title: str) -> str:
    return line_chart([("training loss (per output token)", "#999", metrics["loss"]),
                       ("eval loss (held-out test outputs)", "#1f5fbf", metrics["eval_loss"])],
                      title, "optimizer step", dots=("eval loss (held-out test outputs)",))


def train_report_html(run: Path, config: dict) -> str:
    """The run's page: config is its newest checkpoint's config.json content (the trainer hands it over as it
    saves it); the curves come from the run's metrics.jsonl."""
    run = Path(run)
    metrics = read_metrics(run / "metrics.jsonl")
    training, model = config.get("training", {}), config.get("model", {})
    evals, train, rates = metrics["eval_loss"], metrics["loss"], metrics["tokens_per_s"]
    best = min(evals, key=lambda p: p[1]) if evals else None
    summary = [("step", f'<span class="big">{config.get("step", train[-1][0] if train else 0)}</span>'
                        f' of {training.get("max_steps", "?")}'),
               ("training loss (last logged)", _num(train[-1][1] if train else None, 4)),
               ("eval loss (latest)", f"{_num(evals[-1][1], 4)} at step {evals[-1][0]}" if evals else "n/a"),
               ("eval loss (best)", f"{_num(best[1], 4)} at step {best[0]}" if best else "n/a"),
               ("throughput", f"{rates[-1][1]:,.0f} tokens/s (latest), {np.mean([r for _, r in rates]):,.0f} mean"
                              if rates else "n/a")]
    body = [f"<h1>Training run {escape(run.name)}</h1>", f'<p class="sub">{escape(str(run))}</p>', _kv(summary),
            '<div class="row">', loss_chart(metrics, f"{run.name}: loss per output token"),
            line_chart([("training tokens/s", "#2ECC40", rates)], "throughput", "optimizer step", log_y=False),
            line_chart([("learning rate", "#FF851B", metrics["lr"])], "learning rate", "optimizer step", log_y=False),
            "</div>",
            "<h2>training config</h2>", _kv([(k, escape(json.dumps(v))) for k, v in training.items()]),
            "<h2>model</h2>", _kv([(k, escape(json.dumps(v))) for k, v in model.items()])]
    return _page(f"training {run.name}", body)


def write_train_report(run: Path, config: dict) -> None:
    """loss.svg and report.html in the run folder (the trainer calls this at every save, with the config.json
    content it saved)."""
    run = Path(run)
    svg = loss_chart(read_metrics(run / "metrics.jsonl"), f"{run.name}: loss per output token")
    if svg:
        atomic_write_text(run / "loss.svg", svg)
    atomic_write_text(run / "report.html", train_report_html(run, config))


# --------------------------------------------------------------------------------------------------
# The terminal
# --------------------------------------------------------------------------------------------------


def show_results(tasks: list[Task], results: dict, width: int | None = None, colour: bool | None = None) -> None:
    """Print each task's test input, expected output and attempts as coloured grids (evaluate.py --show)."""
    width = width or shutil.get_terminal_size((160, 40)).columns
    for task in tasks:
        entry = results["tasks"].get(task.id)
        if entry is None:
            continue
        print(f"\n== {task.id}: {task_status(entry)} | loss {_num(entry.get('loss'))} | "
              f"{_num(entry.get('seconds'), 1, 's')}")
        for k, (pair, test) in enumerate(zip(task.test, entry["tests"])):
            blocks = [("input", grid_ansi(pair.input, colour=colour))]
            if pair.output is not None:
                blocks.append(("expected", grid_ansi(pair.output, colour=colour)))
            for a, attempt in enumerate(test["attempts"]):
                ok, wrong, words = attempt_verdict(np.array(attempt, dtype=np.uint8), pair.output)
                mark = {True: "RIGHT", False: "wrong", None: "?"}[ok]
                blocks.append((f"attempt {a + 1}: {mark}", grid_ansi(np.array(attempt), wrong, colour=colour)))
                if ok is False:
                    blocks[-1][1].append(words)
            print(f"test {k + 1}/{len(task.test)}" + ("" if test["attempts"] else f": {test['status']}"))
            print("\n".join(side_by_side(blocks, width)))


class Progress:
    """One line per finished task: done/total, solved so far, elapsed, ETA (mean time per task so far)."""

    def __init__(self, total: int):
        self.total, self.done, self.solved, self.started = total, 0, 0, time.time()

    def task_done(self, task_id: str, solved: bool | None, detail: str = "") -> str:
        self.done += 1
        self.solved += bool(solved)
        elapsed = time.time() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        mark = {True: "solved", False: "wrong", None: "no truth"}[solved]
        line = (f"[{self.done}/{self.total}] {task_id} {mark} | {self.solved} solved so far | "
                f"{duration(elapsed)} elapsed, eta {duration(eta)}" + (f" | {detail}" if detail else ""))
        print(line, flush=True)
        return line
