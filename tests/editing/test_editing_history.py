"""Undo/redo history with autosave, and gene sets (pure Python)."""

import json

import numpy as np
import pytest

from napari_gdt.editing.history import EditHistory, GeneSets, parse_gene_list
from napari_gdt.errors import RecipeError


def test_parse_gene_list():
    assert parse_gene_list("ERBB2, KRT19\nEPCAM;  'MKI67'\tERBB2") == ["ERBB2", "KRT19", "EPCAM", "MKI67"]
    assert parse_gene_list("  ") == []


def test_history_undo_redo_autosave_restore(tmp_path):
    auto = tmp_path / "auto.json"
    calls = []
    h = EditHistory(autosave=auto, on_change=lambda: calls.append(1))
    h.set_region("s", {"rect": [0, 0, 32, 32]})
    lab = np.zeros((4, 4), np.int32)
    lab[1:3, 1:3] = 7
    h.set_region("p", {"labels": "auto.labels.tif", "value": 7}, array=lab)
    e1 = {"op": "scale", "region": "s", "genes": ["A"], "factor": 2.0}
    e2 = {"op": "knockout", "region": "p", "genes": "all"}
    h.push(e1)
    h.push(e2)
    assert json.loads(auto.read_text())["edits"] == [e1, e2]
    assert (tmp_path / "auto.labels.tif").exists()
    assert h.undo() == e2 and h.can_redo and json.loads(auto.read_text())["edits"] == [e1]
    assert h.redo() == e2 and not h.can_redo
    h.undo()
    h.push({"op": "set", "region": "s", "genes": ["B"], "value": 1.0})
    assert not h.can_redo  # a new edit clears redo
    assert len(calls) == 8  # 2 regions, 3 pushes, 2 undos, 1 redo
    # crash: a fresh history restores everything from the autosave
    h2 = EditHistory.restore(auto)
    assert h2.recipe.to_dict() == h.recipe.to_dict()
    from napari_gdt.expression.canvas import ExpressionCanvas

    c = ExpressionCanvas(np.ones((2, 4, 4), np.float32), ["A", "B"], 1.0)
    assert np.array_equal(h2.recipe.masks(c, 16, ["p"])["p"], lab == 7)
    assert h2.describe() == ["scale A x2 in s", "set B = 1 in s"]
    with pytest.raises(RecipeError, match="unknown region 'zz'"):
        h2.push({"op": "knockout", "region": "zz", "genes": "all"})
    with pytest.raises(RecipeError, match="region 's' is used by edit"):
        h2.remove_region("s")
    while h2.undo():
        pass
    assert h2.edits == [] and not h2.can_undo and h2.undo() is None


def test_gene_sets(tmp_path):
    p = tmp_path / "sets.json"
    gs = GeneSets(p)
    gs.save_set("epithelial", ["EPCAM", "KRT19"])
    assert GeneSets(p).get("epithelial") == ["EPCAM", "KRT19"]
    with pytest.raises(RecipeError, match="no gene set named 'x'"):
        gs.get("x")
    with pytest.raises(RecipeError, match="is empty"):
        gs.save_set("e", [])
    p.write_text("{oops")
    with pytest.raises(RecipeError, match="sets.json: gene sets file is not valid JSON"):
        GeneSets(p)
