"""Device choice: CUDA > MPS > CPU, overridable by argument or ``NAPARI_GDT_DEVICE``."""

from __future__ import annotations

import os

import torch

from ..errors import GDTError

__all__ = [
    "PRECISIONS",
    "autocast",
    "default_amp",
    "describe",
    "empty_cache",
    "free_memory_bytes",
    "get_device",
    "is_out_of_memory",
    "peak_memory_bytes",
    "reset_peak_memory",
    "synchronize",
]


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


# ----------------------------------------------------------------- device-side helpers
#: Precisions a renderer or benchmark can run in; ``"fp32"`` is exact, the others use autocast.
PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device, precision: str = "fp32"):
    """A context that runs matmuls and convolutions in ``precision`` on ``device`` (a no-op for ``"fp32"``).

    bf16 is refused (one clear line) where the device cannot run it; fp16 on CPU likewise.
    """
    import contextlib

    device = torch.device(device)
    if precision in (None, "", "fp32"):
        return contextlib.nullcontext()
    if precision not in PRECISIONS:
        raise GDTError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise GDTError(f"precision bf16 is not supported on {torch.cuda.get_device_name(device)} (use fp16 or fp32)")
    if device.type == "cpu" and precision == "fp16":
        raise GDTError("precision fp16 is for GPUs; on the CPU use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_amp(device: torch.device) -> str:
    """The training precision to use by default: bf16 autocast on a CUDA GPU that supports it, else fp32."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings on a GPU need this)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    """Reset the framework's peak-memory counter of ``device`` (CUDA only; a no-op elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak bytes the framework allocated on ``device`` since the last reset (None on the CPU: see the process RSS)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.driver_allocated_memory())
    return None


def free_memory_bytes(device: torch.device) -> tuple[int, int] | None:
    """``(free, total)`` bytes of a CUDA device (``torch.cuda.mem_get_info``); None elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA's, or MPS's 'out of memory' RuntimeError)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def empty_cache(device: torch.device) -> None:
    """Return the framework's cached, unused device memory to the driver (CUDA, MPS; a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def describe(device: torch.device) -> str:
    """One line naming the device (GPU model and memory where there is one)."""
    device = torch.device(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"cuda ({p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda})"
    if device.type == "mps":
        return f"mps (torch {torch.__version__})"
    return f"cpu ({torch.get_num_threads()} torch threads, torch {torch.__version__})"
