"""Classifier two-sample test of realism: can a small CNN tell two sets of tissue patches apart?

The recipe (fixed; do not tune it to a model):

- patches of ``patch_px`` (64) px whose area is at least 90 % tissue, on a grid;
- the tissue of **each** image is split at the median x of its patch centres into a left half
  (training: patches on a grid of stride ``patch_px / 2``, random flips and 90° rotations) and a
  right half (test: non-overlapping patches, the classes balanced by random subsampling); no patch
  crosses the split, so no test pixel is seen in training;
- a 4-layer CNN (3x3 convolutions of 16-32-64-64 channels at full resolution first, ReLU, 2x2
  max-pooling after the first three, global average pooling, one logit), Adam (lr 1e-3), ``steps`` (300) steps
  of ``batch`` (32 + 32) patches, torch seed ``seed`` (0), one CPU thread;
- two variants: ``"rgb"`` (the pixel values, stain and brightness included) and ``"lum"``
  (the luminance of each patch standardised to mean 0 and SD 1: stain and brightness removed);
- the result is the held-out accuracy with a 95 % Wilson interval: 0.5 means the CNN cannot tell
  the two apart, 1.0 that it always can.

Two real sections of one patient are not at 0.5 either (stain differs between sections), so judge
a generator against the **control** (real against real of another section) and the sanity check
(real against a blurred copy of itself, which should be near 1.0).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import GDTError

__all__ = ["C2ST_DEFAULTS", "extract_patches", "train_and_test", "two_sample_test", "wilson_interval"]

C2ST_DEFAULTS = {"patch_px": 64, "min_tissue": 0.9, "steps": 300, "batch": 32, "lr": 1e-3, "seed": 0}


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))


def _channels(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a[..., None]
    return a[..., :3]


def extract_patches(
    img, mask, patch_px: int = 64, min_tissue: float = 0.9, stride: int | None = None, x_range=None
) -> tuple[np.ndarray, np.ndarray]:
    """Patches (N, C, p, p) float32 of ``img`` on a grid of ``stride`` (default ``patch_px``),
    kept when at least ``min_tissue`` of the patch is ``mask``; also their top-left corners (N, 2).
    ``x_range=(xa, xb)``: only patches lying wholly in columns [xa, xb)."""
    a = _channels(img)
    H, W = a.shape[:2]
    m = np.ones((H, W), bool) if mask is None else np.asarray(mask, bool)
    p = int(patch_px)
    s = int(stride or p)
    xa, xb = (0, W) if x_range is None else (int(x_range[0]), int(x_range[1]))
    out, yx = [], []
    ii = np.cumsum(np.cumsum(np.pad(m, ((1, 0), (1, 0))).astype(np.int64), 0), 1)
    for y0 in range(0, H - p + 1, s):
        for x0 in range(max(0, xa), min(W, xb) - p + 1, s):
            t = ii[y0 + p, x0 + p] - ii[y0, x0 + p] - ii[y0 + p, x0] + ii[y0, x0]
            if t >= min_tissue * p * p:
                out.append(a[y0 : y0 + p, x0 : x0 + p].transpose(2, 0, 1))
                yx.append((y0, x0))
    C = a.shape[2]
    return (np.asarray(out, np.float32).reshape(-1, C, p, p), np.asarray(yx, int).reshape(-1, 2))


def _split_x(mask, patch_px: int, min_tissue: float) -> int:
    """Median x (px) of the tissue patch centres: the train | test split of one image."""
    _, yx = extract_patches(np.zeros(np.shape(mask) + (1,), np.float32), mask, patch_px, min_tissue)
    if len(yx) < 4:
        raise GDTError(f"two-sample test: only {len(yx)} tissue patches of {patch_px} px (need >= 4 per image)")
    return int(np.median(yx[:, 1] + patch_px / 2))


def _variant(x: np.ndarray, variant: str) -> np.ndarray:
    if variant == "rgb":
        return x
    if variant == "lum":
        lum = x.mean(axis=1, keepdims=True) if x.shape[1] == 1 else (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        mu = lum.mean(axis=(1, 2, 3), keepdims=True)
        sd = lum.std(axis=(1, 2, 3), keepdims=True)
        return ((lum - mu) / (sd + 1e-3)).astype(np.float32)
    raise GDTError(f"two-sample test variant must be 'rgb' or 'lum', got {variant!r}")


def _net(c_in: int):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(c_in, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1),
    )  # fmt: skip


def train_and_test(a_train, b_train, a_test, b_test, steps: int = 300, batch: int = 32, lr: float = 1e-3, seed: int = 0) -> dict:
    """Train the CNN on ``a_train`` (label 0) vs ``b_train`` (label 1), test on balanced held-out sets.

    All inputs are (N, C, p, p) float32. Returns ``{"accuracy", "ci95", "n_test", "n_train", "seconds"}``.
    """
    import torch

    t0 = time.perf_counter()
    for name, x in (("first train", a_train), ("second train", b_train), ("first test", a_test), ("second test", b_test)):
        if len(x) < 2:
            raise GDTError(f"two-sample test: the {name} set has {len(x)} patch(es) (need >= 2)")
    rng = np.random.default_rng(seed)
    n = min(len(a_test), len(b_test))
    at = a_test[rng.choice(len(a_test), n, replace=False)]
    bt = b_test[rng.choice(len(b_test), n, replace=False)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = _net(a_train.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        A, B = torch.from_numpy(np.ascontiguousarray(a_train)), torch.from_numpy(np.ascontiguousarray(b_train))
        lossf = torch.nn.BCEWithLogitsLoss()
        y = torch.cat([torch.zeros(batch), torch.ones(batch)])
        net.train()
        for _ in range(int(steps)):
            ia = torch.randint(len(A), (batch,), generator=g)
            ib = torch.randint(len(B), (batch,), generator=g)
            x = torch.cat([A[ia], B[ib]])
            k = int(torch.randint(4, (1,), generator=g))
            x = torch.rot90(x, k, (2, 3))
            if int(torch.randint(2, (1,), generator=g)):
                x = torch.flip(x, (3,))
            opt.zero_grad()
            loss = lossf(net(x).squeeze(1), y)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            la = torch.cat([net(torch.from_numpy(at[i : i + 256])).squeeze(1) for i in range(0, n, 256)])
            lb = torch.cat([net(torch.from_numpy(bt[i : i + 256])).squeeze(1) for i in range(0, n, 256)])
    finally:
        torch.set_num_threads(threads)
    correct = int((la < 0).sum()) + int((lb > 0).sum())
    lo, hi = wilson_interval(correct, 2 * n)
    return {
        "accuracy": float(correct / (2 * n)),
        "ci95": [round(lo, 4), round(hi, 4)],
        "n_test": int(2 * n),
        "n_train": int(len(a_train) + len(b_train)),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def two_sample_test(img_a, img_b, mask_a=None, mask_b=None, variant: str = "rgb", **params) -> dict:
    """Held-out accuracy of the CNN telling patches of ``img_a`` from patches of ``img_b``.

    The two images may differ in size (e.g. two sections). Each is split at the median x of its
    tissue patches: left halves train, right halves test (see the module docstring for the fixed
    recipe; ``params`` overrides :data:`C2ST_DEFAULTS`, for tests only).
    """
    p = {**C2ST_DEFAULTS, **params}
    unknown = set(p) - set(C2ST_DEFAULTS)
    if unknown:
        raise GDTError(f"unknown two-sample test parameter(s): {', '.join(sorted(unknown))}")
    P, mt = int(p["patch_px"]), float(p["min_tissue"])
    sets = []
    for img, m in ((img_a, mask_a), (img_b, mask_b)):
        m = np.ones(np.shape(img)[:2], bool) if m is None else np.asarray(m, bool)
        xs = _split_x(m, P, mt)
        tr, _ = extract_patches(img, m, P, mt, stride=P // 2, x_range=(0, xs))
        te, _ = extract_patches(img, m, P, mt, stride=P, x_range=(xs, np.shape(img)[1]))
        sets.append((_variant(tr, variant), _variant(te, variant)))
    (a_tr, a_te), (b_tr, b_te) = sets
    if a_tr.shape[1] != b_tr.shape[1]:
        raise GDTError(f"two-sample test: the images have {a_tr.shape[1]} and {b_tr.shape[1]} channels")
    res = train_and_test(a_tr, b_tr, a_te, b_te, steps=p["steps"], batch=p["batch"], lr=p["lr"], seed=p["seed"])
    res["variant"] = variant
    return res
