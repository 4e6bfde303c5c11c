"""arc.reports.draw and arc.reports.pages: the evaluation page for a known-answer case (parsed with html.parser and,
where Chromium is installed, rendered), the training page, the terminal grids and the progress line."""
import json
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import g

from arc.data.tasks import Pair, Task
from arc.inference.evaluation import score_tasks
from arc.inference.predict import TOO_LONG, Prediction
from arc.inference.results import print_table
from arc.reports.draw import PALETTE, grid_ansi, grid_svg, line_chart, side_by_side
from arc.reports.pages import (
    DEMOS_DRAWN,
    Progress,
    attempt_verdict,
    duration,
    eval_report_html,
    read_metrics,
    show_results,
    write_eval_report,
    write_train_report,
)



def known_case() -> tuple[list[Task], dict]:
    """Four tasks: solved by the second attempt, a wrong-shape attempt, an invalid output, 2 wrong cells."""
    demo = [Pair(g([[1, 2]]), g([[2, 1]]))]
    tasks = [Task("shape", demo, [Pair(g([[3, 4]]), g([[4, 3]]))]),
             Task("solved", demo, [Pair(g([[5, 6]]), g([[6, 5]]))]),
             Task("invalid", demo, [Pair(g([[7]]), g([[7]]))]),
             Task("cells", demo + demo, [Pair(g([[1, 2], [3, 4]]), g([[2, 1], [4, 3]]))])]
    attempts = {"shape": [g([[4], [3]])], "solved": [g([[0, 0]]), g([[6, 5]])], "invalid": [], "cells": [g([[2, 1], [3, 4]])]}
    predictions = [Prediction(t.examples()[0], attempts[t.id], "ok" if attempts[t.id] else
                              "no valid output (no end token (hit the length limit))", votes=[1] * len(attempts[t.id]))
                   for t in tasks]
    results = score_tasks(tasks, predictions)
    for k, entry in enumerate(results["tasks"].values()):
        entry.update(seconds=1.5 + k, loss=0.25 * k)
    results.update(eval_loss=0.4321, checkpoint="ckpt", adapter=None, step=7, data="arc1", split="evaluation",
                   task_set="seed20", method="greedy", decoding={"decode": "greedy", "views": 1}, ttt=None,
                   seconds_total=10.0, seconds_per_task=2.5)
    return tasks, results


class Page(HTMLParser):
    """The cards of a report, each: id, classes, its figures' classes and captions, invalid notes, outlines."""

    def __init__(self):
        super().__init__()
        self.cards, self.stack, self.text_of = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "section" and "card" in classes:
            self.cards.append({"id": attrs["id"], "classes": classes, "figures": [], "invalid": [], "outlined": 0})
        elif self.cards and tag == "figure":
            self.cards[-1]["figures"].append([classes, ""])
        elif self.cards and tag == "rect" and "x" in classes:
            self.cards[-1]["outlined"] += 1
        elif self.cards and tag == "div" and "invalid" in classes:
            self.cards[-1]["invalid"].append("")
            self.text_of = "invalid"
        if tag == "figcaption":
            self.text_of = "figure"

    def handle_endtag(self, tag):
        if tag in ("figcaption", "div"):
            self.text_of = None

    def handle_data(self, data):
        if self.text_of == "figure":
            self.cards[-1]["figures"][-1][1] += data
        elif self.text_of == "invalid":
            self.cards[-1]["invalid"][-1] += data


def test_eval_report_cards_marks_and_counts():
    tasks, results = known_case()
    page = Page()
    page.feed(eval_report_html(tasks, results))
    page.close()
    cards = {c["id"]: c for c in page.cards}
    assert [c["id"] for c in page.cards] == ["t-solved", "t-shape", "t-invalid", "t-cells"]  # solved first
    assert "solved" in cards["t-solved"]["classes"] and "wrong" in cards["t-shape"]["classes"]
    attempts = {k: [(f[0], f[1]) for f in c["figures"] if "attempt" in f[0]] for k, c in cards.items()}
    # solved: one demonstration pair (2 figures), test input, expected, two attempts; the second one right
    assert len(cards["t-solved"]["figures"]) == 6
    assert [("right" in cls, "miss" in cls) for cls, _ in attempts["t-solved"]] == [(False, True), (True, False)]
    assert "2 of 2 cells wrong" in attempts["t-solved"][0][1] and "right" in attempts["t-solved"][1][1]
    [(cls, caption)] = attempts["t-shape"]
    assert "miss" in cls and "wrong shape 2x1, expected 1x2" in caption and cards["t-shape"]["outlined"] == 0
    assert attempts["t-invalid"] == [] and cards["t-invalid"]["invalid"] == ["\u2717 no valid output (no end token (hit the length limit))"]
    [(cls, caption)] = attempts["t-cells"]
    assert "1 of" not in caption and "2 of 4 cells wrong" in caption and cards["t-cells"]["outlined"] == 2
    assert len(cards["t-cells"]["figures"]) == 4 + 3  # two demonstration pairs, input, expected, one attempt


def test_a_card_draws_at_most_a_dozen_demonstrations():
    tasks, results = known_case()
    many = Task("cells", tasks[3].train * 5000, tasks[3].test)  # 10,000 demonstrations
    page = Page()
    page.feed(eval_report_html(tasks[:3] + [many], results))
    page.close()
    assert len(page.cards[-1]["figures"]) == 2 * DEMOS_DRAWN + 3


def test_eval_report_summary_and_file(tmp_path):
    tasks, results = known_case()
    html = eval_report_html(tasks, results)
    assert "1/4 tasks solved" in html and "0.4321 per output token" in html and "0.250 per output token" in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert all(colour in html for colour in PALETTE)
    path = write_eval_report(tmp_path, tasks, results)
    assert path.read_text(encoding="utf-8") == html and not list(tmp_path.glob("*.tmp"))


def test_test_inputs_too_long_for_the_context_are_counted_in_the_summary_line_and_the_page(capsys):
    tasks, results = known_case()
    assert results["tests_too_long"] == 0 and "not predicted" not in eval_report_html(tasks, results)
    predictions = [Prediction(t.examples()[0], status=TOO_LONG if t.id == "cells" else "ok") for t in tasks]
    results = {**results, **score_tasks(tasks, predictions)}
    assert results["tests_too_long"] == 1
    assert "1 test input(s) too long for the context: not predicted, counted wrong" in eval_report_html(tasks, results)
    print_table(results)
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("solved 0/4 tasks")]
    assert summary[0].endswith("| 1 test input(s) too long for the context: not predicted, counted wrong")


def test_grid_svg_merges_runs_and_outlines_wrong_cells():
    svg = grid_svg(g([[0, 0, 3], [3, 3, 3]]), wrong=g([[0, 1, 0], [0, 0, 0]]).astype(bool), cell=10)
    assert 'viewBox="0 0 3 2" width="30" height="20"' in svg
    # background 3 (the commonest colour) is one rect; the run of two 0s one more; one outline
    assert svg.count('class="c3"') == 1 and svg.count('class="c0"') == 1 and svg.count('class="x"') == 1
    assert attempt_verdict(g([[1]]), None) == (None, None, "truth unknown")


def test_grid_ansi_and_side_by_side():
    lines = grid_ansi(g([[0, 4]]), wrong=g([[0, 1]]).astype(bool), colour=False)
    assert lines == ["0 4x"]
    coloured = grid_ansi(g([[2]]), colour=True)
    assert coloured == ["\x1b[48;2;255;65;54m\x1b[97m  \x1b[0m"]
    out = side_by_side([("a", ["11"]), ("bb", coloured), ("c", ["3"])], width=8)
    assert out == ["a    bb", "11   " + coloured[0], "c", "3"]  # the third block wraps


def test_show_results_prints_every_grid(capsys):
    tasks, results = known_case()
    show_results(tasks, results, width=200, colour=False)
    text = capsys.readouterr().out
    assert sum(line.startswith("input ") for line in text.splitlines()) == 4 and "attempt 2: RIGHT" in text and "wrong shape 2x1, expected 1x2" in text
    assert "no valid output" in text and "\x1b[" not in text


def test_progress_line(capsys):
    progress = Progress(4)
    line = progress.task_done("abc", True, "test-time training 2 steps")
    assert line.startswith("[1/4] abc solved | 1 solved so far | 0s elapsed, eta 0s")
    assert line.endswith("| test-time training 2 steps") and capsys.readouterr().out == line + "\n"
    assert progress.task_done("d", False).startswith("[2/4] d wrong | 1 solved so far")
    assert [duration(s) for s in (41.4, 400, 3900, 3 * 86400 + 4 * 3600)] == ["41s", "6m40s", "1h05m", "3d04h"]
    assert [duration(s) for s in (float("inf"), float("nan"), None)] == ["n/a"] * 3  # never an OverflowError


def test_train_report_and_loss_chart(tmp_path):
    lines = [{"step": 10, "loss": 2.0, "lr": 1e-4, "tokens_per_s": 900.0}, {"step": 20, "loss": 1.0, "lr": 2e-4, "tokens_per_s": 1100.0},
             {"step": 20, "eval_loss": 1.5}, {"step": 30, "loss": 0.5, "lr": 2e-4, "tokens_per_s": 1000.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    config = {"step": 30, "training": {"max_steps": 30, "lr": 2e-4}, "model": {"d_model": 32}}  # what the trainer saved
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert metrics["loss"] == [(10, 2.0), (20, 1.0), (30, 0.5)] and metrics["eval_loss"] == [(20, 1.5)]
    write_train_report(tmp_path, config)
    svg = (tmp_path / "loss.svg").read_text()
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1
    assert svg.split('points="')[1].split('"')[0].split()[-1].startswith("660.0,")  # last point at the right edge
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") == 3 and "1.5000 at step 20" in html and "1,000 tokens/s (latest), 1,000 mean" in html
    assert "max_steps" in html and "d_model" in html
    assert line_chart([("none", "#000", [])], "t", "x") == ""


# --------------------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------------------


def png_pixels(data: bytes) -> np.ndarray:
    """(height, width, channels) uint8 of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    width, height, depth, kind, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    assert depth == 8 and kind in (2, 6) and interlace == 0, "unexpected PNG format"
    channels, pos, idat = (3 if kind == 2 else 4), 8, b""
    while pos < len(data):
        length, name = struct.unpack(">I4s", data[pos : pos + 8])
        if name == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), np.int32)
    for y in range(height):
        kind_, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        up = out[y - 1] if y else np.zeros_like(line)
        if kind_ in (0, 2):
            out[y] = (line + (up if kind_ == 2 else 0)) % 256
            continue
        row = np.zeros_like(line)
        for x in range(len(line)):  # Sub, Average, Paeth depend on the pixel to the left: sequential
            left = row[x - channels] if x >= channels else 0
            upleft = up[x - channels] if x >= channels else 0
            if kind_ == 1:
                pred = left
            elif kind_ == 3:
                pred = (left + up[x]) // 2
            else:
                p = left + up[x] - upleft
                pa, pb, pc = abs(p - left), abs(p - up[x]), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else up[x] if pb <= pc else upleft
            row[x] = (line[x] + pred) % 256
        out[y] = row
    return out.reshape(height, width, channels)[:, :, :3].astype(np.uint8)


def test_report_renders_in_headless_chromium(tmp_path):
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
    if browser is None:
        pytest.skip("no Chromium found (chromium, chromium-browser, google-chrome): `apt-get install chromium` gives one")
    tasks, results = known_case()
    page = write_eval_report(tmp_path, tasks, results)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=640,480", page.as_uri()],
                   capture_output=True, timeout=60, check=True)
    pixels = png_pixels(shot.read_bytes())
    assert pixels.shape == (480, 640, 3)
    colours = {tuple(int(c) for c in p) for p in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 10, "the screenshot is blank"
    # the solved task's index chip and card border are drawn in the ARC palette's green
    green = np.all(np.abs(pixels.astype(int) - [0x2E, 0xCC, 0x40]) <= 6, axis=2)
    assert green.sum() > 50
