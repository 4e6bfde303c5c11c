"""Every script under bench/ still runs against today's arc/: each one is imported (which runs nothing but its
imports and definitions), and a script with a command line builds it (`-h`), so a name that moved or a
changed signature at import time fails here, not in the middle of a benchmark."""
import contextlib
import io
import sys
from pathlib import Path

import pytest
from conftest import load_bench

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(str(p.relative_to(BENCH).with_suffix("")) for p in [*BENCH.glob("*.py"), *BENCH.glob("experiments/*.py")])


def test_every_script_is_listed():
    assert {"padding", "speed", "loop", "experiments/stage_table"} <= set(SCRIPTS)  # the glob finds them


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_script_imports_and_its_command_line_builds(name, monkeypatch):
    module = load_bench(name)  # transformers, where a script uses it, is imported inside its functions
    if not hasattr(module, "main") or "argparse" not in (BENCH / f"{name}.py").read_text():
        return  # no command line to build (answer_limit.py's main runs the benchmark itself)
    monkeypatch.setattr(sys, "argv", [f"bench/{name}.py", "-h"])
    with pytest.raises(SystemExit) as exit_, contextlib.redirect_stdout(io.StringIO()) as out:
        module.main()
    assert exit_.value.code == 0 and "usage:" in out.getvalue()
