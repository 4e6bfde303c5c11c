"""The package's shape: sub-packages are layers, each importing only from itself and the layers below it
(arc/__init__.py lists them), and no module imports itself back through a chain of others. Read from the
source with ast, so an import inside a function or under TYPE_CHECKING counts too."""
import ast
from pathlib import Path

import arc

ROOT = Path(arc.__file__).parent


def modules() -> dict[str, Path]:
    return {".".join(("arc", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in ROOT.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The arc modules `name` imports (a `from arc.x import y` of a module y counts as y)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("arc")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .common import x
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("arc"):
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found - {name}


def layer(module: str) -> int:
    parts = module.split(".")
    return arc.LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in arc.LAYERS else -1


def test_every_module_belongs_to_a_layer():
    assert [m for m in modules() if m != "arc" and layer(m) < 0] == []


def test_imports_go_only_downwards():
    known = set(modules())
    upward = [f"{m} -> {i}" for m, p in modules().items() for i in imports(m, p, known) if layer(i) > layer(m)]
    assert upward == []


def test_no_import_cycle():
    known = set(modules())
    graph = {m: {i for i in imports(m, p, known) if i in known and not known.isdisjoint({i})} for m, p in modules().items()}
    # a package's __init__ importing its own modules is not a cycle of concepts; drop package -> child edges
    graph = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for i in sorted(graph.get(m, ())):
            if state.get(i) == 1:
                cycle.extend(path[path.index(i):] + [m, i] if i in path else [m, i])
                return True
            if state.get(i) is None and visit(i, path + [m]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, []):
            break
    assert cycle == []


def test_the_readme_module_map_lists_every_module_and_only_those():
    """README.md's module map names each module under its folder's heading; a module added, moved or
    deleted without the map following fails here."""
    text = (ROOT.parent / "README.md").read_text()
    table = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed, folder = set(), None
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        if cells[0].startswith("**`arc/"):
            folder = cells[0].strip("*`")
        elif folder and cells[0].startswith("`"):
            listed |= {folder + name.strip("` ") for name in cells[0].split(",")}
    actual = {str(p.relative_to(ROOT.parent)) for p in ROOT.glob("*/*.py") if p.name != "__init__.py"}
    actual |= {str(p.relative_to(ROOT.parent)) + "/" for p in ROOT.glob("*/*/") if (p / "__init__.py").is_file()}
    assert sorted(listed ^ actual) == []


def test_lines_are_at_most_120_characters_without_backslash_continuations():
    """What a reader meets: arc/ and the entry scripts in lines of at most 120 characters, none continued with a
    backslash (parentheses say where an expression goes on)."""
    files = [*ROOT.rglob("*.py"), ROOT.parent / "train.py", ROOT.parent / "evaluate.py"]
    long = [f"{p.relative_to(ROOT.parent)}:{n}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
            if len(line) > 120]
    continued = [f"{p.relative_to(ROOT.parent)}:{n}" for p in files
                 for n, line in enumerate(p.read_text().splitlines(), 1) if line.rstrip().endswith("\\")]
    assert long == [] and continued == []


def test_functions_are_at_most_60_lines():
    """A reader follows a run top to bottom: no function or method in arc/ longer than 60 lines (docstring
    included)."""
    import ast
    long = [f"{p.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in ROOT.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert long == []
