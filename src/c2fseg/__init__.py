"""c2fseg: coarse-to-fine abdominal CT organ and tumor segmentation (FLARE23 setting)."""

__version__ = "0.1.0"
