"""Real images as lazy pyramids (napari_gdt.expression.images)."""

import numpy as np
import pytest

from napari_gdt.errors import ReaderError
from napari_gdt.expression.images import open_image_levels


def test_big_tiff_without_pyramid_gets_strided_levels(tmp_path):
    import dask.array as da
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 255, (600, 1000, 3), dtype=np.uint8)
    p = tmp_path / "slide.tiff"
    tifffile.imwrite(p, rgb, tile=(256, 256), photometric="rgb")
    lv = open_image_levels(p, max_coarsest=256)
    assert [tuple(x.shape) for x in lv] == [(600, 1000, 3), (300, 500, 3), (150, 250, 3)]
    assert all(isinstance(x, da.Array) for x in lv)
    np.testing.assert_array_equal(np.asarray(lv[2]), rgb[::4, ::4])


def test_image_errors(tmp_path):
    import tifffile

    with pytest.raises(ReaderError, match="nope.tif: no such image file"):
        open_image_levels(tmp_path / "nope.tif")
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(ReaderError, match="bad.svs: unreadable TIFF image"):
        open_image_levels(bad)
    p = tmp_path / "two.ome.tif"
    tifffile.imwrite(p, np.zeros((2, 32, 32), np.uint16), metadata={"axes": "CYX"}, ome=True)
    assert open_image_levels(p, channel=1)[0].shape == (32, 32)
    with pytest.raises(ReaderError, match=r"two.ome.tif: channel 2 out of range \(the image has 2 channels"):
        open_image_levels(p, channel=2)
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG broken")
    with pytest.raises(ReaderError, match="x.png: unreadable image"):
        open_image_levels(png)
