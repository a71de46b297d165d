"""Coordinate-hashed noise: a pure function of (seed, layer, absolute position).

Per-layer noise in a tiled generator must agree wherever two tiles overlap.
IST-editing achieves this by carrying noise crops from tile to tile in a fixed
order. Here the noise value at an absolute lattice position is computed from a
counter-based hash, so any tile can be generated alone, in any order, on any
device, and still match its neighbours bit for bit.

All arithmetic is done in ``int64`` on values kept below 2**32, with
multipliers below 2**31, so no product ever overflows and CPU, CUDA and MPS
agree exactly.
"""

from __future__ import annotations

import torch

__all__ = ["batched_noise", "coord_noise", "hash_coords", "noise_at"]

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31 (so a 32-bit value times one stays below 2**63).
_M1 = 0x7FEB352D
_M2 = 0x5A1D4E93 & 0x7FFFFFFF
_M3 = 0x2C1B3C6D
# Offset that keeps negative absolute coordinates (halo beyond the canvas
# edge) positive before hashing.
_COORD_OFFSET = 1 << 24


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche mix (xor-shift / multiply), elementwise on int64."""
    h = h & _MASK32
    h = h ^ (h >> 16)
    h = (h * _M1) & _MASK32
    h = h ^ (h >> 15)
    h = (h * _M2) & _MASK32
    h = h ^ (h >> 16)
    return h


def _mix32_int(h: int) -> int:
    """:func:`_mix32` on a Python integer (the same bits)."""
    h &= _MASK32
    h ^= h >> 16
    h = (h * _M1) & _MASK32
    h ^= h >> 15
    h = (h * _M2) & _MASK32
    h ^= h >> 16
    return h


def hash_coords(seed: int, layer: int, ys: torch.Tensor, xs: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """Hash absolute coordinates to uniform 32-bit integers.

    Parameters
    ----------
    seed, layer, salt : int
        Global seed, layer index and a stream selector.
    ys, xs : torch.Tensor
        Broadcastable int64 tensors of absolute lattice coordinates.

    Returns
    -------
    torch.Tensor
        int64 tensor with values in ``[0, 2**32)``.
    """
    base = _mix32_int(((seed & _MASK32) * 0x9E37 + layer * 0x85EB + salt * 0xC2B2) & _MASK32)  # a Python int: no host-device copy
    hy = _mix32(base ^ ((ys + _COORD_OFFSET) & _MASK32))
    h = _mix32((hy * _M3 & _MASK32) ^ ((xs + _COORD_OFFSET) & _MASK32))
    return h


def coord_noise(seed: int, layer: int, y0: int, x0: int, h: int, w: int, device=None) -> torch.Tensor:
    """Standard-normal noise on the absolute lattice window ``[y0, y0+h) x [x0, x0+w)``.

    Returns a float32 tensor of shape ``(h, w)``. The value at absolute
    position ``(y, x)`` depends only on ``(seed, layer, y, x)``.
    """
    ys = torch.arange(y0, y0 + h, dtype=torch.int64, device=device).view(h, 1)
    xs = torch.arange(x0, x0 + w, dtype=torch.int64, device=device).view(1, w)
    return noise_at(seed, layer, ys, xs)


def batched_noise(seed: int, layer: int, origins_yx: torch.Tensor, h: int, w: int, device=None) -> torch.Tensor:
    """Noise maps ``(B, 1, h, w)`` for windows whose first position is ``origins_yx[b]`` (int64, (B, 2))."""
    o = origins_yx.to(device=device, dtype=torch.int64)
    ys = o[:, 0, None, None] + torch.arange(h, dtype=torch.int64, device=device).view(1, h, 1)
    xs = o[:, 1, None, None] + torch.arange(w, dtype=torch.int64, device=device).view(1, 1, w)
    return noise_at(seed, layer, ys, xs)[:, None]


def noise_at(seed: int, layer: int, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Standard-normal values at broadcastable absolute coordinates ``ys``, ``xs``."""
    u1 = hash_coords(seed, layer, ys, xs, salt=1)
    u2 = hash_coords(seed, layer, ys, xs, salt=2)
    # 24-bit uniforms in (0, 1]; Box-Muller.
    f1 = ((u1 >> 8).to(torch.float32) + 1.0) / float(1 << 24)
    f2 = (u2 >> 8).to(torch.float32) / float(1 << 24)
    r = torch.sqrt(-2.0 * torch.log(f1))
    return r * torch.cos(2.0 * torch.pi * f2)
