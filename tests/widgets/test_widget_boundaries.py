"""The widget layer stays thin: small files, no reaching into other objects' private state, no widget finding another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WIDGETS = Path(__file__).resolve().parents[2] / "src" / "napari_gdt" / "widgets"
PANELS = {"generator", "editing", "expression", "compare"}  # the dock widgets (one module each)
FILES = sorted(p for p in WIDGETS.glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_widget_file_over_400_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= 400, f"{path.name}: {n} lines (split it: the limit is 400)"


def private_access(source: str) -> list[str]:
    """``x._name`` where ``x`` is not ``self``: a private attribute of another object (another widget, its helpers, a layer)."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    return bad


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_private_attribute_of_another_object(path):
    bad = private_access(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.name} touches private attributes of other objects:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_widget_finds_or_imports_another(path):
    src = path.read_text(encoding="utf-8")
    assert "dock_widgets" not in src and "findChildren" not in src, f"{path.name} scans the dock widgets"
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in PANELS and node.module != path.stem:
            pytest.fail(f"{path.name}:{node.lineno} imports the panel module .{node.module}; share the Session instead")


def test_the_checks_can_fail():
    assert private_access("def f(self, gen):\n    gen._bridge.updated.connect(self._x)\n") == ["line 2: gen._bridge"]
    assert private_access("def f(self):\n    self.history._redo.clear()\n") == ["line 2: self.history._redo"]
    assert private_access("def f(self):\n    self._x = 1\n") == []
