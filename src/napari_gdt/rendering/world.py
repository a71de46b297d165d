"""World coordinates shared by every layer (Qt-free).

napari world coordinates are the generated image's output pixels ``(y, x)``,
with integer coordinates at pixel *centres* (napari's convention). Bin ``b``
of the expression canvas covers output pixels ``[b*ppb, (b+1)*ppb)``, so a
bin-grid layer needs ``scale = ppb`` and ``translate = (ppb - 1) / 2`` to sit
exactly over its pixels. The canvas affine ``A`` maps continuous bin
coordinates to continuous paired-image coordinates (pixel corners at integers).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bin_layer_transform", "image_world_affine"]


def bin_layer_transform(ppb: float) -> dict:
    """``scale`` and ``translate`` for a layer on the expression bin grid."""
    t = (float(ppb) - 1.0) / 2.0
    return {"scale": (float(ppb), float(ppb)), "translate": (t, t)}


def image_world_affine(canvas_affine: np.ndarray, ppb: float) -> np.ndarray:
    """3x3 affine placing the paired real image (pixel indices) in world coordinates.

    ``world = ppb * inv(A) @ (r + 0.5) - 0.5`` for real-image pixel index ``r``.
    """
    shift = lambda v: np.array([[1.0, 0, v], [0, 1.0, v], [0, 0, 1.0]])  # noqa: E731
    return shift(-0.5) @ np.diag([float(ppb), float(ppb), 1.0]) @ np.linalg.inv(np.asarray(canvas_affine, float)) @ shift(0.5)
