"""The comparison view's difference panel compares pixels, not storage types.

The lazy generated layer holds an 8-bit pyramid; the editing panel's edited layer holds float
pixels in [0, 1]. Where the edit changed nothing, their difference must be ~0 (it was up to 255).
"""

from types import SimpleNamespace

import dask.array as da
import numpy as np

from napari_gdt.widgets.compare import lazy_difference


def _layer(data, multiscale=False, name="x"):
    return SimpleNamespace(data=data, multiscale=multiscale, name=name)


def test_uint8_pyramid_against_float_pixels():
    rng = np.random.default_rng(0)
    edited = rng.random((64, 64, 3), dtype=np.float32)
    edited[:16, :16] = 1.0  # the edited patch
    original = edited.copy()
    original[:16, :16] = 0.0
    u8 = (original * 255 + 0.5).astype(np.uint8)
    pyramid = [da.from_array(u8, chunks=32), da.from_array(u8[::2, ::2], chunks=32)]
    d = np.asarray(lazy_difference(_layer(pyramid, True, "generated"), _layer(edited, False, "edited")))
    assert d.shape == (64, 64)
    assert d[16:, 16:].max() < 1.0 / 255 + 1e-6  # unchanged pixels: only the 8-bit rounding
    assert np.allclose(d[:16, :16], 1.0)


def test_float_layers_unchanged():
    a = np.zeros((8, 8, 3), np.float32)
    b = np.full((8, 8, 3), 0.5, np.float32)
    d = lazy_difference(_layer(a), _layer(b))
    assert np.allclose(d, 0.5)
