"""`python -m vrt_ray ...` is the `vrt-ray` console script."""
import sys

from vrt_ray.cli import main

sys.exit(main())
