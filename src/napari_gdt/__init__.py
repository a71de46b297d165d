"""napari-gdt: generative digital twins of tissue from spatial gene expression."""

__version__ = "0.1.0"
