"""Seamless, order-free tiling: the core guarantee of the generator."""

import numpy as np
import pytest
import torch

from napari_gdt.models.base import trace_geometry
from napari_gdt.models.noise import batched_noise, coord_noise
from napari_gdt.rendering.tiles import Region, TileRenderer

REGION = Region(0, 1024, 0, 1024)


def test_geometry_trace_matches_forward(small_bundle):
    m = small_bundle.model
    g = m.geometry
    for n in (6, 9, 12):
        x = torch.zeros(1, m.n_genes, n, n)
        y = m(x, torch.zeros(1, 2, dtype=torch.int64), m.styles(0), 0)
        assert y.shape[-1] == g.out_len(n)


def test_window_for_covers_span():
    g = trace_geometry([("conv", 3), ("up", 2), ("conv", 3), ("up", 2), ("conv", 3)])
    for p0, p1 in [(0, 4), (5, 17), (-3, 9), (100, 228)]:
        b0, n, crop = g.window_for(p0, p1)
        assert g.out_origin(b0) + crop == p0
        assert g.out_len(n) >= crop + (p1 - p0)
        assert g.out_len(n - 1) < crop + (p1 - p0)  # minimal


def test_noise_is_function_of_absolute_coords():
    a = coord_noise(7, 2, 10, 20, 30, 40)
    b = coord_noise(7, 2, 25, 35, 30, 40)
    np.testing.assert_array_equal(a[15:, 15:].numpy(), b[:15, :25].numpy())
    c = batched_noise(7, 2, torch.tensor([[10, 20], [25, 35]]), 30, 40)
    np.testing.assert_array_equal(c[0, 0].numpy(), a.numpy())
    assert abs(float(a.mean())) < 0.1 and 0.9 < float(a.std()) < 1.1
    assert not torch.equal(coord_noise(8, 2, 10, 20, 30, 40), a)  # seed matters
    assert not torch.equal(coord_noise(7, 3, 10, 20, 30, 40), a)  # layer matters


@pytest.fixture(scope="module")
def renders(small_bundle, small_canvas):
    out = {}
    for T in (128, 512, 1024):
        r = TileRenderer(small_bundle, small_canvas, seed=5, tile_px=T, device="cpu")
        out[T] = r.render_region(REGION)
    return out


def test_tile_sizes_agree(renders):
    a = renders[128]
    assert a.dtype == np.float32 and a.shape == (1024, 1024, 3)
    assert a.std() > 0.01  # not a flat image
    assert np.abs(a - renders[512]).max() <= 1e-5
    assert np.abs(a - renders[1024]).max() <= 1e-5


def test_shuffled_order_identical_bytes(small_bundle, small_canvas, renders):
    r = TileRenderer(small_bundle, small_canvas, seed=5, tile_px=128, device="cpu")
    n = len(r.tiles_for(REGION))
    perm = np.random.default_rng(3).permutation(n)
    out = r.render_region(REGION, order=perm)
    assert out.tobytes() == renders[128].tobytes()


def test_unaligned_region_and_odd_tile(small_bundle, small_canvas, renders):
    r = TileRenderer(small_bundle, small_canvas, seed=5, tile_px=100, device="cpu")
    out = r.render_region(Region(37, 301, 250, 611))
    assert np.abs(out - renders[128][37:301, 250:611]).max() <= 1e-5


def test_seed_changes_output(small_bundle, small_canvas, renders):
    r = TileRenderer(small_bundle, small_canvas, seed=6, tile_px=512, device="cpu")
    assert np.abs(r.render_region(Region(0, 256, 0, 256)) - renders[128][:256, :256]).max() > 1e-3


def test_naive_padding_shows_seams(small_bundle, small_canvas):
    """Contrast: the same weights with zero padding and naive tiling do not stitch."""
    from napari_gdt.rendering.naive import naive_padded_render

    a = naive_padded_render(small_bundle, small_canvas, REGION, tile_px=128, seed=5)
    b = naive_padded_render(small_bundle, small_canvas, REGION, tile_px=1024, seed=5)
    assert np.abs(a - b).max() > 1e-3
