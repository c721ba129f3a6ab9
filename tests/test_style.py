"""The codebase's structural rules, checked so they stay true: ruff clean, short modules,
no import circle inside the package, and a slider path that never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "napari_cellseg"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Module name (without the package prefix) -> file, for every module of the package."""
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}


def _local_imports(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports, at top level or inside functions (`from .x import`,
    `from . import x`, `import napari_cellseg.x`, `from napari_cellseg.x import`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:
                found.update(a.name for a in node.names if a.name in known)
            elif node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("napari_cellseg."):
                found.add(node.module.split(".")[1])
            elif node.level == 0 and node.module == "napari_cellseg":
                found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "napari_cellseg" and len(parts) > 1:
                    found.add(parts[1])
    found.discard(path.stem)
    return found & known


def import_graph() -> dict[str, set[str]]:
    """Package module -> the package modules it imports (`__init__` and `__main__` included)."""
    modules = _modules()
    known = set(modules)
    return {name: _local_imports(path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path `a -> b -> ... -> a`, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_ruff_is_clean():
    targets = [str(ROOT / d) for d in ("napari_cellseg", "tests", "benchmarks", "scripts")]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *targets],
        cwd=ROOT, capture_output=True, text=True,
    )
    if "No module named ruff" in proc.stderr:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_is_short(name):
    lines = len(_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{name}.py has {lines} lines; split it (rule: under {MAX_LINES})"


def test_find_cycle_sees_a_circle_and_a_clean_graph():
    # the checker itself: a known circle is found, a chain is not one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_reads_every_import_form(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from .a import x\nfrom . import b, nothere\nimport napari_cellseg.c\n"
        "def f():\n    from napari_cellseg.d import y\n    from napari_cellseg import e\n"
    )
    assert _local_imports(src, {"a", "b", "c", "d", "e", "m"}) == {"a", "b", "c", "d", "e"}


def test_package_has_no_import_circle():
    graph = import_graph()
    assert "postprocess" in graph and graph["inference"], "the graph was not read"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_core_never_imports_the_gui():
    graph = import_graph()
    gui_prefixes = ("_widget", "_gui", "_segment", "_reader", "_writer", "_sample_data", "_tooltips")
    gui = {m for m in graph if m.startswith(gui_prefixes)}
    core = set(graph) - gui - {"__init__", "__main__"}
    leaks = {m: sorted(graph[m] & gui) for m in core if graph[m] & gui}
    assert not leaks, f"core modules import GUI modules: {leaks}"


def test_the_faces_never_import_each_other():
    graph = import_graph()
    cli = {"cli", "cli_commands", "__main__"}
    widgets = {m for m in graph if m.startswith("_widget")}
    crossings = {m: sorted(graph[m] & widgets) for m in cli if graph[m] & widgets}
    crossings.update({m: sorted(graph[m] & cli) for m in widgets if graph[m] & cli})
    assert not crossings, f"the CLI and the widgets import each other: {crossings}"


def test_slider_path_does_not_import_torch():
    code = "import sys, napari_cellseg.postprocess; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
