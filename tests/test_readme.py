"""What the README promises is what happens: every `napari-cellseg` command in its shell code blocks
parses, the cheap ones run (help, version, models, a 256 px predict), and the menu paths, tab and
button names it quotes are the manifest's and the widgets'. Commands are discovered from the code
blocks, so sections added later are checked too; only the expensive subcommands are skipped."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from napari_cellseg.cli.main import build_parser, main
from napari_cellseg.plugin.main_widget import TABS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MANIFEST = yaml.safe_load((ROOT / "napari_cellseg" / "plugin" / "napari.yaml").read_text(encoding="utf-8"))
SHELL = {"bash", "sh", "shell", "console"}
EXPENSIVE = {"train", "export", "evaluate", "demo"}
"""Subcommands parsed but not run here (minutes of work; test_cli.py runs them on tiny data)."""
SEPARATORS = {"&&", "||", ";", "|"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return [(m.group(1).strip().lower(), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def prose(text: str) -> str:
    """The text outside code blocks and inline code, whitespace folded (menu paths may wrap)."""
    text = re.sub(r"^```.*?^```", " ", text, flags=re.M | re.S)
    return " ".join(re.sub(r"`[^`]*`", " ", text).split())


def cellseg_commands(text: str) -> list[list[str]]:
    """The argument lists of every ``napari-cellseg`` / ``-m napari_cellseg`` call in shell blocks."""
    found = []
    for language, body in code_blocks(text):
        if language not in SHELL:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token.rstrip(";") != token or token in SEPARATORS:
                    if token.rstrip(";") and token not in SEPARATORS:
                        command.append(token.rstrip(";"))
                    args = _cellseg_args(command)
                    if args is not None:
                        found.append(args)
                    command = []
                else:
                    command.append(token)
    return found


def _cellseg_args(tokens: list[str]) -> list[str] | None:
    """``napari-cellseg ARGS`` (after any ``NAME=value``), or ``python``/``torchrun ... -m napari_cellseg ARGS``."""
    while tokens and re.fullmatch(r"\w+=\S*", tokens[0]):
        tokens = tokens[1:]
    if tokens[:1] == ["napari-cellseg"]:
        rest = tokens[1:]
    elif "-m" in tokens and tokens[tokens.index("-m") + 1:][:1] == ["napari_cellseg"]:
        rest = tokens[tokens.index("-m") + 2:]
    else:
        return None
    return [t for t in rest if not re.fullmatch(r"\$\{\w+\[@\]\}", t)]  # "${RESUME[@]}" may be empty


COMMANDS = cellseg_commands(README)


def _is_cheap(args: list[str]) -> bool:
    if {"--help", "-h", "--version"} & set(args) or args[:1] == ["models"]:
        return True
    return args[:1] == ["predict"] and len(args) > 2 and (ROOT / args[2]).exists()


def test_the_readme_has_commands_of_every_kind():
    kinds = {args[0] for args in COMMANDS if args}
    assert {"train", "predict", "export", "evaluate", "models", "demo"} <= kinds
    assert any(args[:1] == ["predict"] and _is_cheap(args) for args in COMMANDS), "no runnable predict example"


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_command_parses(args):
    """Option names, choices and numbers as the parser takes them (placeholders are plain strings)."""
    try:
        build_parser().parse_args(args)
    except SystemExit as exit_info:  # --help and --version exit 0; a bad option exits 2
        assert exit_info.code == 0, f"napari-cellseg {' '.join(args)}: usage error"


CHEAP = [a for a in COMMANDS if _is_cheap(a)]


@pytest.mark.parametrize("args", CHEAP, ids=[" ".join(a)[:60] for a in CHEAP])
def test_cheap_commands_run(args, tmp_path, monkeypatch, capsys, one_thread):
    """Run in a scratch folder (outputs land there), the README's relative input taken from the repository."""
    assert args[0] not in EXPENSIVE or {"--help", "-h"} & set(args)
    monkeypatch.chdir(tmp_path)
    argv = [str(ROOT / a) if i == 2 and args[0] == "predict" else a for i, a in enumerate(args)]
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr().out
    assert code == 0
    if "--version" in args:
        assert re.fullmatch(r"napari-cellseg \d+\.\d+\.\d+\S*", out.strip())
    elif args[0] == "models":
        assert "nuclei" in out and "AP50" in out
    elif args[0] == "predict" and "--help" not in args:
        out_dir = tmp_path / args[args.index("--out") + 1]
        assert (out_dir / f"{Path(args[2]).stem}_nucleus.tif").is_file()


def test_help_shows_defaults_quoted_in_the_readme():
    """The README's defaults table against the parser (it promises `--help` lists them)."""
    text = prose(README)
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    defaults = {a.dest: a.default for a in train._actions}
    assert f"{defaults['epochs']} epochs on the command line" in text
    assert defaults["arch"] == "resnet50_v2" and "`resnet50_v2` (the command line's default)" in README
    # --detections defaults to the --init model's cap, else a new model's (ModelConfig's)
    from dataclasses import fields

    from napari_cellseg.model.network import ModelConfig

    new_model = {f.name: f.default for f in fields(ModelConfig)}
    assert defaults["detections"] is None and f"{new_model['detections_per_img']} detections per image" in text


def _menu_paths(prefix: str) -> list[list[str]]:
    return [m.split(" > ") for m in re.findall(r"\*(" + re.escape(prefix) + r"[^*]+)\*", prose(README))]


def test_plugin_menu_paths_are_the_manifests():
    """napari lists a plugin with several widgets under its manifest's display name."""
    paths = _menu_paths("Plugins > ")
    assert paths
    widgets = {w["display_name"] for w in MANIFEST["contributions"]["widgets"]}
    for path in paths:
        assert path[1] == MANIFEST["display_name"] and len(path) == 3 and path[2] in widgets, path


def test_sample_menu_paths_are_the_manifests_and_name_every_sample():
    paths = _menu_paths("File > Open Sample > ")
    samples = {s["display_name"] for s in MANIFEST["contributions"]["sample_data"]}
    for path in paths:
        assert path[2] == MANIFEST["display_name"] and len(path) == 4 and path[3] in samples, path
    assert {p[3] for p in paths} == samples


def test_the_readme_apt_list_is_what_ci_installs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    def packages(text: str) -> set[str]:
        line = re.search(r"apt-get install ([^\n]+)", text.replace("\\\n", " ")).group(1)
        return {p for p in line.split(">")[0].split() if not p.startswith("-")}

    assert packages(README) == packages(ci)
    section = re.search(r'# README, section "([^"]+)"', ci).group(1)
    assert re.search(rf"^#+ {re.escape(section)}$", README, re.M), f".ci/run names a missing section: {section}"


def test_licence_and_citation_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    licence = project["license"]["text"]
    assert licence == "BSD-3-Clause"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("BSD 3-Clause License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["license"] == licence and citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == __import__("napari_cellseg").__version__


def test_the_split_list_matches_the_data_when_present():
    """docs/dsb2018-split.txt is the reference for every accuracy figure; where the data live, they agree."""
    rows = [line.split() for line in (ROOT / "docs" / "dsb2018-split.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    counts = {split: sum(r[0] == split for r in rows) for split in ("train", "val", "test_release")}
    assert counts == {"train": 473, "val": 93, "test_release": 98}
    assert len({r[1] for r in rows}) == len(rows)  # each image in one part only
    data = Path("/work/shared/data/dsb2018")
    if not data.is_dir():
        pytest.skip("the DSB2018 data are not on this machine")
    for split in ("train", "val"):
        assert sorted(r[1] for r in rows if r[0] == split) == sorted(p.name for p in (data / split).iterdir())
    assert sorted(r[1] for r in rows if r[0] == "test_release") == sorted(
        p.stem for p in (data / "test_release").glob("*.tif"))


# ------------------------------------------------------------------ names on the widgets


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    _, main_widget = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    for title in TABS:  # each tab is built when first shown
        main_widget.tab(title)
    return main_widget


def _button_texts(main_widget) -> set[str]:
    """The buttons' texts as shown, and those a widget's code switches them to (Cancel while running)."""
    from qtpy.QtWidgets import QAbstractButton

    shown = {b.text().replace("&&", "&") for b in main_widget.findChildren(QAbstractButton) if b.text()}
    switched = set()
    for module in (ROOT / "napari_cellseg" / "plugin").glob("*_widget.py"):
        for assignment in re.findall(r"\.text(?:, [\w.]+\.text)* = (.+)", module.read_text(encoding="utf-8")):
            switched.update(re.findall(r'"([^"]+)"', assignment))
    return shown | switched


def test_quoted_buttons_and_tabs_are_the_widgets(dock):
    """Buttons are quoted as [Name] in the README; a button's running state (Cancel) counts too."""
    texts = _button_texts(dock)
    assert {"Segment image", "Start training", "Export results", "Fine-tune on the training set", "Cancel"} <= texts
    quoted = re.findall(r"(?<![\]\w!])\[([^\]]+)\](?![(\[])", prose(README))
    assert quoted, "no [button] quoted"
    for name in quoted:
        assert name in texts, f"README quotes a button [{name}] no widget has"
    tabs = [dock.tabs.tabText(i) for i in range(dock.tabs.count())]
    listed = re.search(r"with the tabs ((?:\*\*[^*]+\*\*(?:, | and )?)+)", prose(README)).group(1)
    assert re.findall(r"\*\*([^*]+)\*\*", listed) == tabs


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_lead_somewhere():
    """Every in-page anchor is a heading, every relative link a file of the repository."""
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", README, flags=re.M | re.S), re.M)}
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        path, _, anchor = target.partition("#")
        if re.match(r"\w+://", target):
            continue
        if path:
            assert (ROOT / path).exists(), f"README links to a missing file: {path}"
        elif anchor:
            assert anchor in anchors, f"README links to a missing section: #{anchor}"


def test_python_examples_name_what_the_package_holds():
    """Every import and ``napari_cellseg.<name>`` of the README's Python examples exists (a module
    moved or a public name renamed shows here, not in a user's notebook)."""
    import ast
    import importlib

    import napari_cellseg

    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("napari_cellseg"):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"README: {node.module} has no {missing}"
            elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "napari_cellseg":
                assert node.attr in napari_cellseg.__all__, f"README: napari_cellseg.{node.attr} is not public"
