"""Video preference data: the PreferencePair record, benchmark loaders, synthetic data."""
from vrt_ray.data.pair import VERDICTS, PreferencePair

__all__ = ["PreferencePair", "VERDICTS"]
