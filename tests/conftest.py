"""Shared fixtures. Nothing here or in the code under test may reach a model hub."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random Qwen2.5-VL, built once per test session."""
    from vrt_ray.models import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)
