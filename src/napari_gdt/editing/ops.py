"""Edit operations: small pure functions of (chunk, mask, parameters).

Every function takes

``chunk`` : (G, h, w) float ndarray
    Counts per bin for ``G`` genes (a block of the canvas or the whole of it).
``mask`` : (h, w) bool ndarray
    The bins of the region that the edit changes.
``genes`` : sequence of int, or None
    Channel indices (into ``chunk``'s first axis) of the genes to edit;
    ``None`` means every channel.

and returns a **new** float32 array of the same shape. Bins outside ``mask``
and genes outside ``genes`` are copied bit for bit, so the tile cache (keyed
by the bytes of the input window) recomputes only tiles that really changed.
Counts stay non-negative: every operation clamps its result at 0.

Population statistics (a region's mean profile, a population's second
moment) are computed once by the caller (see :mod:`napari_gdt.editing.recipe`)
and passed in, so a chunk's result never depends on which other chunks exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "scale",
    "set_value",
    "add",
    "knockout",
    "transfer",
    "eigen",
    "second_moment",
    "eigen_basis",
    "eigen_transform",
    "eigen_rescale_transform",
]


def _prep(chunk, mask, genes):
    out = np.array(chunk, dtype=np.float32, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != out.shape[1:]:
        raise ValueError(f"mask shape {mask.shape} does not match chunk bins {out.shape[1:]}")
    gi = np.arange(out.shape[0]) if genes is None else np.asarray(list(genes), dtype=np.intp)
    return out, mask, gi


def _apply(out, mask, gi, new_values):
    """Write ``new_values`` ((len(gi), n_masked)) into the masked bins of the chosen genes."""
    sub = out[gi]  # (g, h, w) copy
    sub[:, mask] = np.maximum(new_values, 0.0).astype(np.float32)
    out[gi] = sub
    return out


def scale(chunk: np.ndarray, mask: np.ndarray, genes: Sequence[int] | None, factor: float, others: float = 1.0) -> np.ndarray:
    """Multiply the chosen genes by ``factor`` in the region.

    ``others`` multiplies every *other* gene in the region (default 1: left
    alone). IST-editing's whole-slide script scales its marker genes and
    multiplies all other genes by 0 (``others=0``); see docs/recipes.md.
    """
    out, mask, gi = _prep(chunk, mask, genes)
    if not mask.any():
        return out
    if others != 1.0:
        rest = np.setdiff1d(np.arange(out.shape[0]), gi)
        if rest.size:
            _apply(out, mask, rest, out[rest][:, mask] * np.float32(others))
    return _apply(out, mask, gi, out[gi][:, mask] * np.float32(factor))


def set_value(chunk: np.ndarray, mask: np.ndarray, genes: Sequence[int] | None, value: float) -> np.ndarray:
    """Set the chosen genes to ``value`` counts per bin in the region."""
    out, mask, gi = _prep(chunk, mask, genes)
    if not mask.any():
        return out
    return _apply(out, mask, gi, np.full((len(gi), int(mask.sum())), value, dtype=np.float32))


def add(chunk: np.ndarray, mask: np.ndarray, genes: Sequence[int] | None, value: float) -> np.ndarray:
    """Add ``value`` counts per bin to the chosen genes in the region (clamped at 0)."""
    out, mask, gi = _prep(chunk, mask, genes)
    if not mask.any():
        return out
    return _apply(out, mask, gi, out[gi][:, mask] + np.float32(value))


def knockout(chunk: np.ndarray, mask: np.ndarray, genes: Sequence[int] | None) -> np.ndarray:
    """Set the chosen genes to 0 in the region."""
    return set_value(chunk, mask, genes, 0.0)


def transfer(
    chunk: np.ndarray,
    mask: np.ndarray,
    genes: Sequence[int] | None,
    mean_from: np.ndarray,
    mean_to: np.ndarray,
    strength: float = 1.0,
) -> np.ndarray:
    """Move the region's mean profile towards another region's.

    ``mask`` is the region being edited (recipe field ``to``), whose mean
    profile over the chosen genes is ``mean_to``; ``mean_from`` is the mean
    profile of the region it moves towards (recipe field ``from``). Both are
    1-D arrays, one value per chosen gene (counts per bin).

    Each gene is rescaled, ``x' = x * ((1 - s) + s * mean_from / mean_to)``,
    so that the region's new mean is exactly ``(1 - s) * mean_to + s * mean_from``
    while its spatial pattern (and its zeros) are kept. A gene with
    ``mean_to == 0`` has no pattern to rescale; it gets ``s * mean_from`` added
    to every bin instead, which gives the same new mean.
    """
    out, mask, gi = _prep(chunk, mask, genes)
    mean_from = np.asarray(mean_from, dtype=np.float64).reshape(-1)
    mean_to = np.asarray(mean_to, dtype=np.float64).reshape(-1)
    if mean_from.shape != (len(gi),) or mean_to.shape != (len(gi),):
        raise ValueError(f"transfer needs one mean per gene ({len(gi)}); got {mean_from.shape} and {mean_to.shape}")
    if not mask.any():
        return out
    s = float(strength)
    x = out[gi][:, mask].astype(np.float64)  # (g, n)
    pos = mean_to > 0
    factor = np.where(pos, (1.0 - s) + s * mean_from / np.where(pos, mean_to, 1.0), 1.0)
    shift = np.where(pos, 0.0, s * mean_from)
    return _apply(out, mask, gi, x * factor[:, None] + shift[:, None])


# ----------------------------------------------------------------- eigen edit
def second_moment(x: np.ndarray) -> np.ndarray:
    """Uncentred second moment ``X^T X / n`` of samples ``x`` ((n, g)), float64 (g, g)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        raise ValueError("second moment of an empty population")
    return x.T @ x / x.shape[0]


def eigen_basis(moment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors (columns) of a symmetric moment."""
    vals, vecs = np.linalg.eigh(np.asarray(moment, dtype=np.float64))
    order = np.argsort(vals)[::-1]
    return np.clip(vals[order], 0.0, None), vecs[:, order]


def eigen_transform(
    moment_src: np.ndarray,
    moment_ref: np.ndarray,
    k: int = 1,
    align_signs: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The linear map of the eigen edit: ``x' = x @ A`` (before clamping).

    ``A = U_src @ diag(w) @ U_ref^T`` with ``w_i = sqrt(lambda_ref_i / lambda_src_i)``
    for the top ``k`` eigenvalues and 1 for the others; ``U`` hold the
    eigenvectors of the uncentred second moments as columns, sorted by
    descending eigenvalue. Eigenvectors are defined up to sign;
    with ``align_signs`` each reference eigenvector is flipped to point the same
    way as the matching source eigenvector (``u_src_i . u_ref_i >= 0``), so the
    edit does not mirror a coordinate at random. A source eigenvalue of 0 (a
    direction the source population never takes) keeps weight 1.

    Returns ``(A, w)``.
    """
    val_s, vec_s = eigen_basis(moment_src)
    val_r, vec_r = eigen_basis(moment_ref)
    if align_signs:
        sgn = np.sign(np.einsum("gi,gi->i", vec_s, vec_r))
        sgn[sgn == 0] = 1.0
        vec_r = vec_r * sgn[None, :]
    k = int(max(0, min(k, len(val_s))))
    w = np.ones_like(val_s)
    tiny = max(float(val_s.max(initial=0.0)), 1.0) * 1e-12
    top = np.arange(k)
    ok = val_s[top] > tiny
    w[top[ok]] = np.sqrt(val_r[top[ok]] / val_s[top[ok]])
    return vec_s @ np.diag(w) @ vec_r.T, w


def eigen_rescale_transform(moment_src: np.ndarray, k: int, coef: float) -> tuple[np.ndarray, np.ndarray]:
    """IST-editing's whole-slide variant: ``A = U diag(w) U^T`` with ``w_i = sqrt(coef)`` for the top ``k``.

    One population only: its expression is projected on its own eigenvectors,
    the top-``k`` coordinates are multiplied by ``sqrt(coef)`` and mapped back
    with the same eigenvectors. Returns ``(A, w)``.
    """
    val, vec = eigen_basis(moment_src)
    k = int(max(0, min(k, len(val))))
    w = np.ones_like(val)
    w[:k] = np.sqrt(float(coef))
    return vec @ np.diag(w) @ vec.T, w


def eigen(
    chunk: np.ndarray,
    mask: np.ndarray,
    genes: Sequence[int] | None,
    transform: np.ndarray,
    basis: Sequence[int] | None = None,
    strength: float = 1.0,
) -> np.ndarray:
    """Apply the eigen edit's linear map to every bin of the region.

    ``transform`` is ``A`` from :func:`eigen_transform`, of size
    ``(len(basis), len(basis))``; ``basis`` lists the channels the moments were
    taken over (``None``: all). Each bin's expression over the basis genes,
    ``x``, becomes ``x @ A``, clamped at 0; only the channels in ``genes``
    (which must be part of the basis) take the new values, the others keep
    theirs. ``strength`` blends: ``(1 - s) * x + s * edited`` (IST-editing's
    videos walk this from 0 to 1).
    """
    out, mask, gi = _prep(chunk, mask, genes)
    bi = np.arange(out.shape[0]) if basis is None else np.asarray(list(basis), dtype=np.intp)
    A = np.asarray(transform, dtype=np.float64)
    if A.shape != (len(bi), len(bi)):
        raise ValueError(f"eigen transform is {A.shape}, expected ({len(bi)}, {len(bi)})")
    pos = {int(c): j for j, c in enumerate(bi)}
    try:
        cols = np.asarray([pos[int(c)] for c in gi], dtype=np.intp)
    except KeyError as e:
        raise ValueError(f"edited channel {e.args[0]} is not part of the eigen basis") from None
    if not mask.any():
        return out
    x = out[bi][:, mask].astype(np.float64).T  # (n, b)
    y = np.maximum(x @ A, 0.0)
    s = float(strength)
    y = (1.0 - s) * x + s * y
    return _apply(out, mask, gi, y[:, cols].T)
