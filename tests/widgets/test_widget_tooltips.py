"""First-run polish: every control of every dock widget has a tooltip.

The widgets are read from the plugin manifest (napari.yaml), so a new panel is covered as soon as it
is registered.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "src" / "napari_gdt" / "napari.yaml"


def dock_widgets() -> list[tuple[str, str]]:
    """(display name, python_name) of every widget contribution in napari.yaml."""
    m = yaml.safe_load(MANIFEST.read_text())
    c = m["contributions"]
    commands = {cmd["id"]: cmd["python_name"] for cmd in c.get("commands", [])}
    return [(w["display_name"], commands[w["command"]]) for w in c.get("widgets", [])]


def controls_without_tooltip(widget) -> list[str]:
    """Describe each user control under ``widget`` whose toolTip is empty."""
    from qtpy.QtWidgets import (
        QAbstractButton,
        QAbstractItemView,
        QAbstractSpinBox,
        QCheckBox,
        QComboBox,
        QDoubleSpinBox,
        QLineEdit,
        QListView,
        QSlider,
        QSpinBox,
    )

    kinds = (QAbstractButton, QLineEdit, QComboBox, QSpinBox, QDoubleSpinBox, QSlider, QListView, QCheckBox)
    bad = []
    for child in widget.findChildren(kinds):
        parent = child.parentWidget()
        # parts of a compound control (the line edit inside a spin box or combo box, the corner
        # button of a table, the popup list of a combo box) carry their owner's tooltip
        owner = parent
        internal = False
        while owner is not None and owner is not widget:
            if isinstance(owner, (QAbstractSpinBox, QComboBox, QAbstractItemView)):
                internal = True
                break
            owner = owner.parentWidget()
        if internal:
            continue
        if child.toolTip().strip():
            continue
        label = child.placeholderText() if isinstance(child, QLineEdit) else ""
        if not label and hasattr(child, "text"):
            try:
                label = child.text()
            except TypeError:
                label = ""
        bad.append(f"{type(child).__name__} {child.objectName() or ''} {label!r}".replace("  ", " "))
    return bad


def test_manifest_lists_widgets():
    names = [n for n, _ in dock_widgets()]
    assert "Generated tissue" in names and len(names) >= 2


@pytest.mark.parametrize("name,python_name", dock_widgets(), ids=[n for n, _ in dock_widgets()])
def test_every_control_has_a_tooltip(make_napari_viewer, qtbot, name, python_name):
    mod, _, cls = python_name.partition(":")
    factory = getattr(importlib.import_module(mod), cls)
    viewer = make_napari_viewer()
    w = factory(viewer)
    qtbot.addWidget(w) if hasattr(w, "setParent") and w.parent() is None else None
    missing = controls_without_tooltip(w)
    assert not missing, f"{name} ({python_name}): controls without a tooltip:\n  " + "\n  ".join(missing)


def test_checker_finds_a_missing_tooltip(qtbot):
    from qtpy.QtWidgets import QPushButton, QSpinBox, QVBoxLayout, QWidget

    w = QWidget()
    qtbot.addWidget(w)
    lay = QVBoxLayout(w)
    ok, bad, spin = QPushButton("Ok"), QPushButton("Bad"), QSpinBox()
    ok.setToolTip("does things")
    spin.setToolTip("a number")
    for x in (ok, bad, spin):
        lay.addWidget(x)
    assert controls_without_tooltip(w) == ["QPushButton 'Bad'"]
