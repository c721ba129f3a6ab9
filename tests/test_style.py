"""The codebase's structural rules, checked so they stay true: ruff clean, short modules, a top
folder of at most 12 modules, layered subpackages (no import circle, no arrow up), Qt and napari
only in ``plugin/``, and a slider path that never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "napari_cellseg"
MAX_LINES = 400


LAYERS = [
    {"errors", "defaults", "progress", "atomic", "_torch", "torch_libs", "devices", "distributed", "sample_data"},
    {"io"}, {"model"}, {"evaluation"}, {"inference"}, {"training", "export"},
    {"api", "cli", "plugin", "__init__", "__main__"},
]
"""Layers from the bottom up: a module may import its own layer or one below, never one above."""
GUI_LIBRARIES = {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy"}
MAX_TOP_MODULES = 12


def _modules() -> dict[str, Path]:
    """Dotted module name (without the package prefix; a package by its own name, the root's
    ``__init__`` as ``__init__``) -> file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _package_parts(path: Path) -> list[str]:
    return list(path.relative_to(PACKAGE).parent.parts) if path.is_relative_to(PACKAGE) else []


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(dotted modules under the package, top-level outside packages) that ``path`` imports, at top
    level or inside functions, in every form (``from .x import``, ``from .. import x``,
    ``import napari_cellseg.x``, ``from napari_cellseg.x import``)."""
    local: set[str] = set()
    external: set[str] = set()
    here = _package_parts(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and (node.module == "napari_cellseg" or node.module.startswith("napari_cellseg.")):
                module = node.module.partition(".")[2]
            else:
                external.add((node.module or "").split(".")[0])
                continue
            local.update(f"{module}.{a.name}" if module else a.name for a in node.names)
            local.add(module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                head, _, rest = alias.name.partition(".")
                (local.add(rest) if head == "napari_cellseg" and rest else external.add(head))
    return local, external


def _local_imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports (names imported from a module are not modules)."""
    me = next((name for name, p in _modules().items() if p == path), path.stem)
    return {m for m in _imports(path)[0] if m in known and m != me and m}


def import_graph() -> dict[str, set[str]]:
    """Package module -> the package modules it imports (packages' ``__init__`` included)."""
    modules = _modules()
    known = set(modules)
    return {name: _local_imports(path, known) for name, path in modules.items()}


def layer_of(module: str) -> int:
    head = module.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if head in layer)


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
    assert lines < MAX_LINES, f"{name} has {lines} lines; split it (rule: under {MAX_LINES})"


def test_find_cycle_sees_a_circle_and_a_clean_graph():
    # the checker itself: a known circle is found, a chain is not one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_reads_every_import_form(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    (tmp_path / "io").mkdir()
    src = tmp_path / "io" / "m.py"
    src.write_text(
        "from .a import x\nfrom .. import b, nothere\nimport napari_cellseg.c\nfrom ..model import net\n"
        "def f():\n    from napari_cellseg.d import y\n    from napari_cellseg import e\n    import qtpy.QtCore\n"
    )
    known = {"io.a", "b", "c", "d", "e", "model", "model.net", "io.m"}
    assert _local_imports(src, known) == {"io.a", "b", "c", "d", "e", "model", "model.net"}
    assert _imports(src)[1] == {"qtpy"}


def test_package_has_no_import_circle():
    graph = import_graph()
    assert "inference.postprocess" in graph and graph["inference.predict"], "the graph was not read"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    graph = import_graph()
    upward = {m: sorted(d for d in deps if layer_of(d) > layer_of(m)) for m, deps in graph.items()}
    upward = {m: deps for m, deps in upward.items() if deps}
    assert not upward, f"imports up the layers {[sorted(layer) for layer in LAYERS]}: {upward}"


def test_the_top_folder_shows_the_architecture():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules at the top (at most {MAX_TOP_MODULES}): {top}"
    prefixed = [p.name for p in PACKAGE.rglob("_*.py") if p.name.startswith(("_widget", "_gui", "_segment"))]
    assert not prefixed, f"a prefix stands in for a folder: {prefixed}"


def test_only_the_plugin_imports_qt_or_napari():
    leaks = {}
    for name, path in _modules().items():
        gui = _imports(path)[1] & GUI_LIBRARIES
        if gui and not name.startswith("plugin"):
            leaks[name] = sorted(gui)
    assert not leaks, f"Qt/napari imported outside napari_cellseg.plugin: {leaks}"


def test_the_faces_never_import_each_other():
    graph = import_graph()
    face = {"cli": "cli", "__main__": "cli", "plugin": "plugin"}  # ``python -m napari_cellseg`` is the CLI
    crossings = {m: sorted(d for d in deps if face.get(d.split(".")[0], face[m.split(".")[0]]) != face[m.split(".")[0]])
                 for m, deps in graph.items() if m.split(".")[0] in face}
    crossings = {m: deps for m, deps in crossings.items() if deps}
    assert not crossings, f"the CLI and the plugin import each other: {crossings}"


def test_slider_path_does_not_import_torch():
    code = "import sys, napari_cellseg.inference.postprocess; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
