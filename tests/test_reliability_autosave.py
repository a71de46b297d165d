"""Issue 17, autosave: every stroke is saved within a second, and runs never overwrite one another."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_stroke_survives_a_kill(tmp_path):
    """Paint after the last edit, kill -9 the process a second later: the stroke is restored."""
    from napari_gdt.editing.history import EditHistory
    from napari_gdt.editing.regions import read_labels

    auto = tmp_path / "session.edits.autosave-run1.json"
    script = textwrap.dedent(
        """
        import sys, time
        import numpy as np
        from napari_gdt.editing.autosave import StrokeAutosaver
        from napari_gdt.editing.history import EditHistory

        h = EditHistory(autosave=sys.argv[1])
        labels = np.zeros((16, 16), np.int32)
        h.set_region("r", {"labels": "r.labels.tif", "value": 1}, array=labels)  # the last edit
        saver = StrokeAutosaver(h.save_autosave, delay=0.5, lock=h.lock)
        labels[2:6, 3:9] = 1  # a brush stroke: the widget calls touch() on the labels layer's paint event
        saver.touch()
        print("painted", flush=True)
        time.sleep(60)
        """
    )
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-c", script, str(auto)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = p.stdout.readline().decode().strip()
        assert line == "painted", p.stderr.read().decode()[-500:]
        time.sleep(1.2)  # "within about a second"
    finally:
        p.kill()  # SIGKILL: no atexit, no flush
        p.wait(10)
        p.stdout.close()
        p.stderr.close()
    h = EditHistory.restore(auto)
    assert list(h.recipe.regions) == ["r"]
    lab = read_labels(auto.parent / "r.labels.tif")
    assert int((lab == 1).sum()) == 24 and lab[2:6, 3:9].all()


def test_stroke_autosaver_debounces():
    from napari_gdt.editing.autosave import StrokeAutosaver

    calls = []
    s = StrokeAutosaver(lambda: calls.append(time.monotonic()), delay=0.2)
    t0 = time.monotonic()
    for _ in range(50):  # one burst of strokes
        s.touch()
    assert s.pending
    time.sleep(0.5)
    assert len(calls) == 1 and calls[0] - t0 < 0.45
    s.touch()
    s.flush()  # saved at once on close
    assert len(calls) == 2 and not s.pending


def test_each_run_gets_its_own_autosave(tmp_path):
    from napari_gdt.editing.autosave import latest_autosave, list_autosaves, new_autosave_path

    canvas = tmp_path / "c.ome.zarr"
    canvas.mkdir()
    a = new_autosave_path(canvas, run_id="20260101T000000-1")
    a.write_text("{}")
    b = new_autosave_path(canvas, run_id="20260101T000000-1")  # same second, same pid
    assert a != b and a.parent == tmp_path and a.name.startswith("c.ome.zarr.edits.autosave-")
    b.write_text("{}")
    os.utime(a, (time.time() - 100, time.time() - 100))
    assert list_autosaves(canvas) == [b, a]
    assert latest_autosave(canvas, exclude=b) == a
    # a canvas in a folder we cannot write (or an in-memory name): autosaves in the temp folder
    elsewhere = new_autosave_path("her2st demo canvas")
    assert not str(elsewhere).startswith(str(tmp_path))


@pytest.fixture
def canvas_file(tmp_path):
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.synthetic import synthetic_canvas

    p = synthetic_canvas((16, 16), seed=1).to_ome_zarr(tmp_path / "c.ome.zarr")
    return ExpressionCanvas.from_ome_zarr(p)


def _widget(make_napari_viewer, qtbot, tmp_path):
    from napari_gdt.widgets.editing import EditingWidget

    w = EditingWidget(make_napari_viewer(), gene_sets=tmp_path / "g.json")
    qtbot.addWidget(w)
    w.async_render = False
    return w


def test_painting_is_autosaved(make_napari_viewer, qtbot, small_bundle, canvas_file, tmp_path):
    from napari_gdt.editing.regions import read_labels

    w = _widget(make_napari_viewer, qtbot, tmp_path)
    w.set_session(small_bundle, canvas_file)
    value = w.new_painted_region("tumour")
    layer = w.labels_layer
    labels_file = w.history.autosave_path.parent / w._labels_file()
    assert not read_labels(labels_file).any()
    layer.brush_size = 3
    layer.paint((8, 8), value)  # a stroke, and no edit after it
    qtbot.waitUntil(lambda: labels_file.exists() and read_labels(labels_file).any(), timeout=2000)
    assert (read_labels(labels_file) == value).sum() == (np.asarray(layer.data) == value).sum() > 0


def test_restart_keeps_and_offers_the_last_runs_autosave(make_napari_viewer, qtbot, small_bundle, canvas_file, tmp_path):
    from napari_gdt.editing.recipe import load_recipe

    run1 = _widget(make_napari_viewer, qtbot, tmp_path)
    run1.set_session(small_bundle, canvas_file)
    run1.new_painted_region("a")
    run1.region_from_threshold(gene=canvas_file.genes[0], vmin=1.0, name="b")
    first = run1.history.autosave_path
    assert sorted(load_recipe(first).regions) == ["a", "b"]
    # a crash, then a restart on the same canvas
    run2 = _widget(make_napari_viewer, qtbot, tmp_path)
    run2.set_session(small_bundle, canvas_file)
    assert run2.history.autosave_path != first
    assert run2.restore_candidate == first  # offered on open
    run2.new_painted_region("c")  # the new run's first region action
    assert sorted(load_recipe(first).regions) == ["a", "b"]  # the crashed run's autosave is untouched
    run2.restore_autosave()
    assert sorted(run2.history.recipe.regions) == ["a", "b"]
    assert sorted(load_recipe(run2.history.autosave_path).regions) == ["a", "b"]
