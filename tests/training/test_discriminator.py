"""The discriminator's expression path: per-bin values pooled straight to its feature grid."""

import pytest
import torch
import torch.nn.functional as F

from napari_gdt.training.losses import MultiScaleDiscriminator, PatchDiscriminator, bin_pool_matrix


def _old_way(c, ppb, off, n_px, n_out):
    """Upsample (nearest), crop to the image, adaptive-average-pool: what the matrix replaces."""
    up = F.interpolate(c, scale_factor=ppb, mode="nearest")[..., off : off + n_px, off : off + n_px]
    return F.adaptive_avg_pool2d(up, (n_out, n_out))


@pytest.mark.parametrize(
    "n,ppb,off,n_px,n_out",
    [(18, 16, 79, 130, 16), (26, 16, 79, 258, 32), (10, 8, 5, 70, 8), (7, 4, 3, 21, 2), (12, 8, 9, 77, 9), (5, 1, 0, 5, 5)],
)
def test_bin_pool_matrix_equals_upsample_crop_pool(n, ppb, off, n_px, n_out):
    torch.manual_seed(0)
    c = torch.randn(2, 3, n, n)
    a = bin_pool_matrix(n, ppb, off, n_px, n_out)
    assert a.shape == (n_out, n)
    assert torch.allclose(a.sum(1), torch.ones(n_out))  # each cell is an average
    new = torch.einsum("bcyx,jy,kx->bcjk", c, a, a)
    assert torch.allclose(new, _old_way(c, ppb, off, n_px, n_out), atol=1e-5)


def test_discriminator_logits_and_gradients_unchanged_by_the_shortcut():
    """Same logits and the same gradient w.r.t. image and counts as the full-resolution formulation."""
    torch.manual_seed(1)
    d = MultiScaleDiscriminator(3, n_genes=4, scales=2, ch=8).eval()
    img = torch.rand(2, 3, 130, 130, requires_grad=True)
    cond = torch.randn(2, 4, 18, 18, requires_grad=True)
    out = d(img, cond, 79, 16)
    g_img, g_cond = torch.autograd.grad(sum(o.sum() for o in out), (img, cond))

    def reference(pd: PatchDiscriminator, x, cnd, off, ppb):
        f = pd.body(x * 2.0 - 1.0)
        c = _old_way(pd.cond(cnd), ppb, off, x.shape[-1], f.shape[-1])
        return pd.head(torch.cat([f, c], dim=1))

    ref = [reference(d.ds[0], img, cond, 79, 16), reference(d.ds[1], F.avg_pool2d(img, 2), cond, 39, 8)]
    r_img, r_cond = torch.autograd.grad(sum(o.sum() for o in ref), (img, cond))
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, atol=1e-5)
    for g, r in ((g_img, r_img), (g_cond, r_cond)):
        assert float((g - r).abs().max()) <= 1e-5 * float(r.abs().max()) and float(r.abs().max()) > 0
