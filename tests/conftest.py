"""Shared fixtures. Nothing here or in the code under test may reach a model hub."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests: no wall-clock deadline (the 2-core CI machine is shared), fixed seed so a
# CI run is repeatable; raise max_examples locally with --hypothesis-profile=thorough.
settings.register_profile("ci", deadline=None, derandomize=True, max_examples=200)
settings.register_profile("thorough", deadline=None, max_examples=5000)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random Qwen2.5-VL, built once per test session."""
    from vrt_ray.models import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)
