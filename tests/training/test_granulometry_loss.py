"""The granulometry loss (``--lambda-gran``): the size of the stained structures, at the batch's own Otsu threshold."""

from __future__ import annotations

import pytest
import torch

from napari_gdt.training.losses import (
    GRANULOMETRY_SIZES,
    batch_nuclear_mask,
    granulometry,
    granulometry_loss,
    otsu_threshold,
)

NUCLEUS = (0.3, 0.2, 0.5)  # RGB of a haematoxylin-stained nucleus; the background is 0.9 grey-pink


def _picture(half: int, n: int, seed: int, colour=NUCLEUS, size: int = 96) -> torch.Tensor:
    """Squares of side ``2 half`` (possibly overlapping) on a pale background, (1, 3, size, size) in [0, 1]."""
    img = torch.full((1, 3, size, size), 0.9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        y, x = torch.randint(half, size - half, (2,), generator=g).tolist()
        img[..., y - half : y + half, x - half : x + half] = torch.tensor(colour).view(1, 3, 1, 1)
    return img


def test_otsu_threshold_splits_two_modes():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(2000, generator=g) * 0.05, torch.randn(1000, generator=g) * 0.05 + 1.0])
    assert 0.2 < float(otsu_threshold(v)) < 0.8
    assert float(otsu_threshold(torch.full((10,), 0.3))) == pytest.approx(0.3)  # one value: itself


def test_granulometry_is_the_size_distribution():
    small = granulometry(batch_nuclear_mask(_picture(2, 60, 1)))[0]  # 4-px nuclei
    big = granulometry(batch_nuclear_mask(_picture(5, 10, 1)))[0]  # 10-px clumps
    assert len(small) == 1 + len(GRANULOMETRY_SIZES)
    assert (small[1:] <= small[:-1] + 1e-6).all() and (big[1:] <= big[:-1] + 1e-6).all()  # openings only remove
    # 4-px squares survive openings up to 4 px and vanish at 6; 10-px ones survive up to 8 and vanish at 12
    i4, i6, i8, i12 = (1 + GRANULOMETRY_SIZES.index(s) for s in (4, 6, 8, 12))
    assert small[i4] > 0.9 * small[0] and small[i6] < 0.01 * small[0]
    assert big[i8] > 0.9 * big[0] and big[i12] < 0.01 * big[0]


def test_granulometry_loss_sees_merged_nuclei_not_placement():
    target = granulometry(batch_nuclear_mask(torch.cat([_picture(2, 60, s) for s in range(4)]))).mean(0)
    same_kind = torch.cat([_picture(2, 60, s) for s in range(10, 14)])  # other nuclei of the same size
    clumps = torch.cat([_picture(5, 10, s) for s in range(10, 14)])  # about the same stained area, in clumps
    near, far = float(granulometry_loss(same_kind, target)), float(granulometry_loss(clumps, target))
    assert near < 0.05 and far > 20 * near
    # stained more lightly, the same nuclei: the batch's own threshold follows the stain, as the segmenter's does
    light = torch.cat([_picture(2, 60, s, colour=(0.55, 0.45, 0.7)) for s in range(10, 14)])
    assert float(granulometry_loss(light, target)) < 0.05
    x = clumps.clone().requires_grad_(True)
    granulometry_loss(x, target).backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_granulometry_refuses_small_windows_and_one_channel():
    with pytest.raises(ValueError, match="too small for an opening of 12 px"):
        granulometry(torch.rand(1, 1, 20, 20))
    with pytest.raises(ValueError, match="RGB H&E windows only"):
        granulometry_loss(torch.rand(1, 1, 64, 64), torch.ones(1 + len(GRANULOMETRY_SIZES)))


def test_separable_pool_is_the_square_pool():
    import torch.nn.functional as F

    from napari_gdt.training.losses import _valid_max

    x = torch.rand(2, 1, 40, 33)
    for s in GRANULOMETRY_SIZES:
        assert torch.equal(_valid_max(x, s), F.max_pool2d(x, s, stride=1))
