"""Device choice: CUDA > MPS > CPU, overridable by argument or ``NAPARI_GDT_DEVICE``."""

from __future__ import annotations

import os

import torch

from ..errors import GDTError

__all__ = ["get_device"]


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device to run on.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` (or None) picks CUDA, then MPS, then CPU, unless the
        environment variable ``NAPARI_GDT_DEVICE`` names one. Any other value
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is used as given and
        checked for availability.
    """
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        env = os.environ.get("NAPARI_GDT_DEVICE", "").strip()
        if env and env != "auto":
            return get_device(env)
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GDTError(f"device {device!r} requested but CUDA is not available (use --device cpu or auto)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GDTError(f"device {device!r} requested but MPS is not available (use --device cpu or auto)")
    return dev
