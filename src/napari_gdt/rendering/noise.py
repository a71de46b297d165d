"""Moved to :mod:`napari_gdt.models.noise` (the generators and the renderer share it); re-exported for old imports."""

from ..models.noise import *  # noqa: F401,F403
from ..models.noise import __all__  # noqa: F401
