"""vrt-ray: thinking-with-image video reward models (VR-Thinker), trained and served on Ray."""

__version__ = "0.1.0"
