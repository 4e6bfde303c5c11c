import json

from arc.plot import loss_svg, read_metrics, write_loss_svg


def test_loss_svg_draws_each_logged_point(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.0}, {"step": 20, "eval_loss": 1.5}, {"step": 30, "loss": 0.5}]
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    train, evals = read_metrics(metrics)
    assert train == [(10, 2.0), (20, 1.0), (30, 0.5)] and evals == [(20, 1.5)]
    svg = loss_svg(train, evals, "run")
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1
    # the last training point sits at the right edge of the plot area
    assert "660.0," in svg.split("<polyline")[1].split("points=")[1].split()[-1]
    write_loss_svg(metrics, tmp_path / "loss.svg", "run")
    assert (tmp_path / "loss.svg").read_text() == svg


def test_loss_svg_of_no_points_is_empty():
    assert loss_svg([], [], "empty") == ""
