"""Policies in the MLflow model registry: a trained policy directory (weights + processor files)
becomes run artifacts under `policy/` and a version of a registered model; a model named as
`models:/NAME/VERSION` or `models:/NAME@ALIAS` is downloaded once into a local cache and used
as a directory like any checkpoint."""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from vrt_ray.errors import VrtError

ARTIFACT_FOLDER = "policy"
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?")


class RegistryError(VrtError):
    """A registry URI that is malformed, or names no model version."""


def register(client, run_id: str, name: str, policy_dir: str) -> str:
    """Log `policy_dir` as the run's `policy/` artifacts and register it as a new version of
    `name` (created when missing); returns the version."""
    from mlflow.exceptions import MlflowException

    client.log_artifacts(run_id, policy_dir, ARTIFACT_FOLDER)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/{ARTIFACT_FOLDER}",
                                          run_id=run_id).version
    return str(version)  # a local store answers an int, a server a string


def parse_model_uri(text: str) -> Optional[Tuple[str, Optional[str], Optional[str]]]:
    """(name, version, alias) of `models:/NAME/VERSION` or `models:/NAME@ALIAS`; None when
    `text` is not one."""
    match = _MODEL_URI.fullmatch(text)
    return match.group("name", "version", "alias") if match else None


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vrt-ray" / "models"


def local_model_dir(spec: str, tracking_uri: str, cache_dir: str | Path | None = None) -> str:
    """A local policy directory for `spec`: a directory as it is, or a registry URI's version
    downloaded from `tracking_uri` into `cache_dir` (default ~/.cache/vrt-ray/models; a
    version is fetched once)."""
    if not spec.startswith("models:/"):
        if not Path(spec).is_dir():
            raise VrtError(f"{spec}: no such model directory (give a checkpoint directory or "
                           f"models:/NAME/VERSION)")
        return spec
    parsed = parse_model_uri(spec)
    if parsed is None:
        raise RegistryError(f"{spec}: not a registry URI (models:/NAME/VERSION or "
                            f"models:/NAME@ALIAS)")
    name, version, alias = parsed
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from vrt_ray.mlflow_log import client_for

    client = client_for(tracking_uri)
    try:
        version = version or client.get_model_version_by_alias(name, alias).version
        source = client.get_model_version_download_uri(name, version)
    except MlflowException as exc:
        raise RegistryError(f"{spec}: not found in the model registry at {tracking_uri} "
                            f"({exc.message})") from exc
    store = hashlib.sha1(tracking_uri.encode()).hexdigest()[:12]
    target = Path(cache_dir or default_cache()) / store / name / str(version)
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{version}.") as staging:
        try:
            fetched = download_artifacts(artifact_uri=source, dst_path=staging,
                                         tracking_uri=tracking_uri)
        except MlflowException as exc:
            raise RegistryError(f"{spec}: download of {source} failed ({exc.message})") from exc
        try:
            Path(fetched).rename(target)  # complete or absent, never half there
        except OSError:
            if not target.is_dir():  # else another process was first
                raise
    return str(target)
