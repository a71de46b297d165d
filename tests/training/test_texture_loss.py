"""The texture loss (``train --lambda-tex``): Gram matrices of a fixed random network's features."""

import numpy as np
import pytest
import torch

from napari_gdt.training.losses import (
    TEXTURE_WIDTHS,
    spectral_loss,
    texture_features,
    texture_grams,
    texture_loss,
)


def _discs(seed, n=4, size=128, r=4, k=60):
    """Dark round nuclei at random places on a pale ground: one texture, many placements."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.ones((n, 3, size, size), np.float32)
    for i in range(n):
        for _ in range(k):
            cy, cx = g.uniform(0, size, 2)
            out[i, :, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 0.2
    return torch.from_numpy(out)


def _phase_randomised(a, seed):
    """The same power spectrum as ``a`` with random phases: the same contrast per scale, no discs."""
    g = torch.Generator().manual_seed(seed)
    ph = torch.fft.fft2(torch.rand(a.shape, generator=g))
    return torch.fft.ifft2(torch.fft.fft2(a).abs() * torch.exp(1j * torch.angle(ph))).real.float()


def test_texture_loss_sees_shapes_the_spectrum_does_not():
    real = _discs(0)
    elsewhere = _discs(1)  # the same kind of nuclei at other places
    scrambled = _phase_randomised(real, 5)  # the same spectrum, no nuclei
    assert float(texture_loss(real, real)) == pytest.approx(0.0, abs=1e-7)
    # the spectrum cannot tell the scrambled picture from the real one better than another placement
    assert float(spectral_loss(scrambled, real)) < 1.5 * float(spectral_loss(elsewhere, real))
    # the Gram matrices can (measured: 0.21 against 0.028)
    assert float(texture_loss(scrambled, real)) > 4 * float(texture_loss(elsewhere, real))


def test_texture_loss_ignores_stain_and_brightness_and_has_gradients():
    real = _discs(0)
    assert float(texture_loss(0.5 * real + 0.3, real)) < 1e-4
    x = _discs(2).requires_grad_(True)
    texture_loss(x, real).backward()
    assert float(x.grad.abs().sum()) > 0
    # a steady target in place of the real batch gives the same figure
    assert float(texture_loss(x.detach(), target=texture_grams(real))) == pytest.approx(
        float(texture_loss(x.detach(), real)), rel=1e-6
    )


def test_texture_network_is_fixed_and_sized():
    img = _discs(3, n=2, size=130)
    a, b = texture_features(img), texture_features(img)
    # one map per stage, the same on every call (the filters are seeded, never trained), padding-free
    assert len(a) == len(TEXTURE_WIDTHS)
    assert [f.shape[1] for f in a] == list(TEXTURE_WIDTHS)
    assert a[0].shape[-2:] == (128, 128) and a[1].shape[-2:] == (62, 62)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # small windows keep the stages that fit; below 3 px none does, and the loss says so
    assert len(texture_features(img[..., :20, :20])) == 3
    with pytest.raises(ValueError, match="too small"):
        texture_loss(img[..., :2, :2], img[..., :2, :2])


def test_texture_loss_one_channel():
    real = _discs(0)[:, :1]
    assert float(texture_loss(_phase_randomised(real, 1), real)) > 4 * float(texture_loss(_discs(1)[:, :1], real))


def test_texture_statistics_stay_float32_under_mixed_precision():
    real, other = _discs(0, n=2, size=64), _discs(1, n=2, size=64)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        grams = texture_grams(real)
        loss = texture_loss(other, real)
    assert all(g.dtype == torch.float32 for g in grams) and loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(texture_loss(other, real)), rel=1e-5)
