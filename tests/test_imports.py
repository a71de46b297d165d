"""Imports point down (DESIGN.md): walk every module's imports (ast) and fail on an upward or sideways arrow.

Each top-level unit of ``napari_gdt`` (a subpackage or a top-level module) has a
layer. A module may import its own unit and units of *lower* layers only; two
units on the same layer never import each other, so there are no cycles.
The core (everything but the napari edge) must not import napari or Qt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "napari_gdt"

# lowest first; DESIGN.md: errors, data -> expression, models' shared maths (noise) -> editing, rendering
# -> analysis, export, training -> session -> cli, widgets, demo
LAYERS = [
    {"__init__", "errors"},
    {"data", "pixels", "safeio"},  # pixels: the pixel rules; safeio: never overwrite what the user made
    {"expression", "models"},  # models/noise.py is the shared maths of models and rendering
    {"editing", "rendering", "synthetic"},
    {"analysis", "export"},
    {"training"},  # evaluates a trained model with analysis
    {"session"},
    {"widgets", "_reader"},
    {"demo", "_sample_data"},
    {"cli"},  # ``napari-gdt demo`` opens the demo
]
RANK = {u: i for i, layer in enumerate(LAYERS) for u in layer}
EDGE = {"widgets", "demo", "_reader", "_sample_data"}  # napari and Qt live only here
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


def _unit(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) < 2:
        return "__init__"
    name = parts[1]
    return name if (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file() else "__init__"


def _imports():
    """Yield (file, line, importing unit, imported dotted name) for every napari_gdt and GUI import."""
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        mod = ".".join(rel.parts)
        pkg = mod[: -len(".__init__")] if mod.endswith(".__init__") else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield f, node.lineno, _unit(mod), a.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    if node.module:
                        yield f, node.lineno, _unit(mod), ".".join([*base, node.module])
                    else:
                        for a in node.names:
                            yield f, node.lineno, _unit(mod), ".".join([*base, a.name])
                elif node.module:
                    yield f, node.lineno, _unit(mod), node.module


def test_every_unit_has_a_layer():
    units = {
        p.stem if p.is_file() else p.name
        for p in ROOT.iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }
    missing = sorted(units - set(RANK))
    assert not missing, f"add these to LAYERS in tests/test_imports.py: {missing}"


def test_imports_point_down():
    bad = []
    for f, line, src, name in _imports():
        if not name.startswith("napari_gdt"):
            continue
        dst = _unit(name)
        if dst != src and RANK[dst] >= RANK[src]:
            bad.append(f"{f.relative_to(ROOT.parent)}:{line}: {src} (layer {RANK[src]}) imports {name} (layer {RANK[dst]})")
    assert not bad, "imports must point down:\n" + "\n".join(bad)


def test_core_has_no_gui_imports():
    bad = [
        f"{f.relative_to(ROOT.parent)}:{line}: {name}"
        for f, line, src, name in _imports()
        if src not in EDGE and name.split(".")[0] in GUI_MODULES
    ]
    assert not bad, "the core must not import napari or Qt:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "rule", ["quantise", "downsample2x", "resample_to_model_grid", "resample_to_grid", "read_image", "to_uint8"]
)
def test_each_pixel_rule_is_defined_once(rule):
    defs = [
        str(f.relative_to(ROOT.parent))
        for f in ROOT.rglob("*.py")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == rule
    ]
    assert defs == ["napari_gdt/pixels.py"], f"{rule} is defined in {defs}; it belongs in napari_gdt/pixels.py only"


def test_the_checker_catches_an_upward_arrow(tmp_path):
    """The walk must be able to fail: a fake models module importing rendering is an upward arrow."""
    fake = tmp_path / "napari_gdt"
    (fake / "models").mkdir(parents=True)
    (fake / "rendering").mkdir()
    for p in (fake, fake / "models", fake / "rendering"):
        (p / "__init__.py").write_text("")
    (fake / "models" / "bad.py").write_text("from ..rendering import tiles\n")
    globals()["ROOT"], old = fake, ROOT
    try:
        with pytest.raises(AssertionError, match="models .* imports napari_gdt.rendering"):
            test_imports_point_down()
    finally:
        globals()["ROOT"] = old
