"""Minimal canvas persistence: OME-Zarr write and lazy read."""

import numpy as np
import zarr

from napari_gdt.expression.canvas import ExpressionCanvas


def test_ome_zarr_round_trip(tmp_path, small_canvas):
    p = small_canvas.to_ome_zarr(tmp_path / "c.ome.zarr", chunks=(8, 32, 32))
    back = ExpressionCanvas.from_ome_zarr(p)
    assert back.genes == small_canvas.genes and back.bin_um == small_canvas.bin_um
    assert back.data.chunks[0][0] == 8 and back.data.chunks[1][0] == 32  # chunked over genes and space
    np.testing.assert_array_equal(np.asarray(back.data), np.asarray(small_canvas.data))
    g = zarr.open_group(str(p), mode="r")
    assert [c["label"] for c in g.attrs["omero"]["channels"]] == small_canvas.genes
    ms = g.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"] and ms["version"] == "0.4"


def test_read_window_zero_pads(small_canvas):
    w = small_canvas.read_window(-2, 78, 5, 5)
    assert w.shape == (len(small_canvas.genes), 5, 5)
    assert (w[:, :2] == 0).all() and (w[:, :, 2:] == 0).all()
    np.testing.assert_array_equal(w[:, 2:, :2], np.asarray(small_canvas.data[:, 0:3, 78:80]))


def test_align_reorders(small_canvas):
    genes = small_canvas.genes[::-1][:5]
    a = small_canvas.align(genes)
    assert a.genes == genes
    np.testing.assert_array_equal(np.asarray(a.data[0]), np.asarray(small_canvas.data[len(small_canvas.genes) - 1]))
