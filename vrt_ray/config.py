"""The run configuration: a structured OmegaConf schema, loading with overrides, validation.

One config describes a whole run. `load(path, overrides)` merges a YAML file and `key=value`
overrides onto the schema below; anything wrong (an unknown key, a value of the wrong type, an
impossible value) raises `ConfigError` with a one-line message naming the key and what is
allowed.  Numeric bounds live next to each field (`_ge`, `_gt`, `_range` metadata), choices are
`Literal` types, so the schema is the single place that says what a valid run is.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from vrt_ray.copy_corpus import FRAME_IMAGES, KINDS as TEXT_COPY_KINDS
from vrt_ray.errors import VrtError
from vrt_ray.tiny_spec import tiny_spec

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "tiny_cpu"
DIMENSIONS = ("TA", "VQ", "MQ")


class ConfigError(VrtError):
    """A config that cannot describe a run; the message is one line naming the key."""


def _ge(default, low):
    """A field whose value must be >= low."""
    return field(default=default, metadata={"ge": low})


def _gt(default, low):
    """A field whose value must be > low."""
    return field(default=default, metadata={"gt": low})


def _range(default, low, high):
    """A field whose value must lie in [low, high]."""
    return field(default=default, metadata={"ge": low, "le": high})


@dataclass
class ModelConfig:
    path: str = "outputs/tiny/model"  # a Qwen2.5-VL checkpoint directory
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    # the shape of the tiny model `vrt-ray pipeline` makes when `path` holds none: KEY=VALUE
    # fields of vrt_ray.tiny_spec.TinySpec (docs/tiny_model.md); empty: the default shape
    tiny_spec: List[str] = field(default_factory=list)


@dataclass
class VideoConfig:
    backend: Literal["pyav", "decord"] = "pyav"
    min_pixels: int = _ge(56 * 56, 28 * 28)  # pixel budget per frame given to the processor
    max_pixels: int = _ge(112 * 112, 28 * 28)
    cache_mb: int = _ge(512, 0)  # per-process LRU frame cache


@dataclass
class SynthConfig:
    pairs_train: int = _ge(160, 1)
    pairs_val: int = _ge(20, 0)
    pairs_test: int = _ge(40, 1)
    min_frames: int = _ge(16, 2)
    max_frames: int = _ge(256, 2)
    size: int = _ge(112, 96)  # a multiple of 8: the synthetic scenes need it to stay readable
    fps: int = _gt(8, 0)
    seed: int = 0
    notes: Literal["exact", "coarse"] = "exact"  # teacher notes in pixels or in words


@dataclass
class DataConfig:
    format: Literal["jsonl", "videogen-rewardbench", "genai-bench", "mjbench-video"] = "jsonl"
    dir: str = "outputs/tiny/data"  # where train/val/test files live (or synthetic data goes)
    train: str = "train.jsonl"
    val: str = "val.jsonl"
    test: str = "test.jsonl"
    video_root: str = ""  # relative video paths resolve here; empty: the data file's folder
    strict: bool = False  # a missing video is an error rather than a skipped pair
    synthetic: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class ProtocolConfig:
    preset: str = "vrt"  # a protocol template: vrt (ours) or vr_thinker (official checkpoint)
    dimensions: List[str] = field(default_factory=lambda: list(DIMENSIONS))
    initial_frames: int = _ge(4, 1)  # per video, sampled uniformly
    pin_initial: bool = True  # keep the initial view out of the memory window
    memory_window: int = _ge(2, 1)  # tool results whose images stay in context
    max_turns: int = _ge(6, 1)  # tool calls per episode
    max_frames_per_call: int = _ge(8, 1)
    max_new_tokens: int = _ge(256, 1)  # per turn
    max_context_tokens: int = _ge(8192, 64)


@dataclass
class SamplingConfig:
    temperature: float = _ge(1.0, 0.0)
    top_p: float = _range(1.0, 0.0, 1.0)
    top_k: int = _ge(0, 0)  # 0: off


@dataclass
class VLLMConfig:
    gpu_memory_utilization: float = _range(0.85, 0.01, 1.0)
    tensor_parallel_size: int = _ge(1, 1)
    max_model_len: int = _ge(16384, 64)
    enforce_eager: bool = False
    enable_prefix_caching: bool = True


@dataclass
class RolloutConfig:
    engine: Literal["hf", "vllm"] = "hf"
    num_workers: int = _ge(1, 1)
    num_cpus: float = _ge(1.0, 0.0)
    num_gpus: float = _ge(0.0, 0.0)
    max_batch: int = _ge(8, 1)  # episodes per generate call (HF engine)
    timeout_s: float = _gt(600.0, 0.0)  # per max_batch episodes of a call; past it: dead
    max_restarts: int = _ge(3, -1)  # Ray actor restarts; -1: unlimited
    restart_timeout_s: float = _gt(300.0, 0.0)  # a restarted worker must be back within it
    weight_sync: Literal["object_store", "gloo"] = "object_store"  # learner -> engines, on CPU
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)


@dataclass
class ReferenceConfig:
    num_workers: int = _ge(1, 0)  # 0: no reference (only valid with grpo.beta = 0)
    num_cpus: float = _ge(1.0, 0.0)
    num_gpus: float = _ge(0.0, 0.0)


@dataclass
class VerifierConfig:
    w_format: float = _ge(0.2, 0.0)
    w_dims: float = _ge(0.4, 0.0)
    w_overall: float = _ge(0.4, 0.0)
    invalid_call_penalty: float = _ge(0.0, 0.0)  # subtracted per invalid tool call
    over_budget_penalty: float = _ge(0.0, 0.0)  # subtracted per turn over budget
    incomplete_answer_penalty: float = _ge(0.0, 0.0)  # subtracted for ending on a broken answer
    num_cpus: float = _ge(0.25, 0.0)


@dataclass
class LearnerConfig:
    world_size: int = _ge(1, 1)
    num_cpus_per_worker: float = _ge(1.0, 0.0)
    num_gpus_per_worker: float = _ge(0.0, 0.0)
    zero_stage: int = _range(2, 0, 3)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on GPU, gloo on CPU
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    micro_batch_tokens: int = _ge(4096, 64)  # token budget of one micro-batch
    lr: float = _gt(1e-6, 0.0)
    weight_decay: float = _ge(0.0, 0.0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = _ge(0, 0)
    max_grad_norm: float = _gt(1.0, 0.0)
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class WarmupConfig:
    enabled: bool = True  # perception warm-up of a tiny base model; off for real checkpoints
    steps: int = _ge(800, 0)
    batch_size: int = _ge(16, 1)
    lr: float = _gt(1e-3, 0.0)
    restate_per_pair: int = _ge(0, 0)  # prompt-restating sequences a training pair
    restate_share: float = _range(0.0, 0.0, 1.0)  # of each batch (0: drawn with the captions)
    copy_steps: int = _ge(0, 0)  # copying steps before the captions (copy_corpus.py)
    copy_lr: float = _gt(1e-3, 0.0)
    copy_kinds: List[str] = field(default_factory=lambda: list(TEXT_COPY_KINDS))
    copying_per_step: int = _ge(0, 0)  # copying sequences (copy_kinds) added to each step
    copying_share: float = _range(0.0, 0.0, 0.9)  # their share of a step's loss (0: by tokens)


@dataclass
class ColdStartConfig:
    enabled: bool = True
    traces: str = "traces.jsonl"  # relative to data.dir
    epochs: int = _ge(3, 0)  # 0: the first-, answer- and copy-turn steps alone
    batch_size: int = _ge(8, 1)
    lr: float = _gt(1e-3, 0.0)
    eval_fraction: float = _range(0.1, 0.0, 0.9)
    slip_rate: float = _range(0.0, 0.0, 1.0)  # share of train traces with a slipped call
    slip_kinds: List[str] = field(default_factory=lambda: ["cut"])  # cut, range (vrt_ray/sft.py)
    first_turn_steps: int = _ge(0, 0)  # steps of first turns alone (context -> turn 1) first
    first_turns_per_step: int = _ge(0, 0)  # first turns added to each step of the epochs
    opening_turns: int = _ge(1, 1)  # turns a "first turn" holds: the trace cut after them
    answer_turn_steps: int = _ge(0, 0)  # steps of answer turns alone, after the first turns'
    answer_turns_per_step: int = _ge(0, 0)  # answer turns added to each step of the epochs
    copy_turn_steps: int = _ge(0, 0)  # steps of frame-label copies alone, after the answers'
    copy_turns_per_step: int = _ge(0, 0)  # frame-label copies added to each step of the epochs
    copying_per_step: int = _ge(0, 0)  # copying sequences (warmup.copy_kinds) added to each step
    copying_share: float = _range(0.0, 0.0, 0.9)  # their share of a step's loss (0: by tokens)


@dataclass
class RFTConfig:
    enabled: bool = True
    pairs: int = _ge(0, 0)  # training pairs sampled (a seeded subset); 0: every one
    samples_per_pair: int = _ge(4, 1)
    temperature: float = _ge(1.0, 0.0)
    epochs: int = _ge(1, 1)
    batch_size: int = _ge(8, 1)
    lr: float = _gt(5e-4, 0.0)


@dataclass
class GRPOConfig:
    enabled: bool = True
    steps: int = _ge(20, 0)
    pairs_per_step: int = _ge(4, 1)
    group_size: int = _ge(4, 2)
    clip_low: float = _range(0.2, 0.0, 1.0)
    clip_high: float = _ge(0.28, 0.0)
    beta: float = _ge(0.01, 0.0)  # KL coefficient
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    loss_agg: Literal["token-mean", "seq-mean-token-mean"] = "token-mean"
    scale_by_std: bool = True
    eps: float = _gt(1e-6, 0.0)
    drop_zero_variance: bool = True
    overlap: bool = False  # roll out step t+1 while step t learns (one-step off-policy)
    lr: float = _gt(1e-4, 0.0)


@dataclass
class EvalConfig:
    data: str = ""  # a benchmark file; empty: data.dir / data.test
    format: Literal["jsonl", "videogen-rewardbench", "genai-bench", "mjbench-video"] = "jsonl"
    video_root: str = ""  # the benchmark's relative video paths resolve here; empty: its folder
    batch_size: int = _ge(8, 1)
    html_samples: int = _ge(8, 0)  # traces shown in the HTML report
    length_buckets: List[int] = field(default_factory=lambda: [64])  # frame-count edges


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///outputs/mlflow.db"  # MLflow tracking URI (a local store, or http(s)://)
    experiment: str = "vrt-ray"
    registered_model: str = ""  # register the final policy under this name; empty: don't
    parent_run_id: str = ""  # nest this job's run under that one (the pipeline sets it)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # where the HTTP proxy listens; 0.0.0.0 for every interface
    port: int = _range(8000, 0, 65535)
    app_name: str = "vrt-judge"  # the Serve application: one per served model on a cluster
    route_prefix: str = "/"  # its URL prefix, e.g. /judge-7b beside another model's
    num_replicas: int = _ge(1, 1)  # fixed replica count when autoscaling is off
    autoscaling: bool = False
    min_replicas: int = _ge(1, 0)
    max_replicas: int = _ge(2, 1)
    num_cpus: float = _ge(1.0, 0.0)  # per replica
    num_gpus: float = _ge(0.0, 0.0)
    max_batch_size: int = _ge(8, 1)  # requests gathered into one episode-runner call
    batch_wait_s: float = _ge(0.05, 0.0)  # how long a batch waits to fill after its first
    max_ongoing_requests: int = _ge(64, 1)  # per replica, running or queued for a batch
    media_root: str = "outputs/media"  # JSON requests name videos by path under here, only
    max_video_mb: int = _ge(200, 1)  # per video, uploaded or under the media root
    max_prompt_chars: int = _ge(4000, 1)
    keep_traces: int = _ge(1000, 1)  # trace pages kept on disk (output_dir/serve/traces)


@dataclass
class CheckpointConfig:
    dir: str = "outputs/tiny/checkpoints"
    every_steps: int = _ge(10, 1)
    keep_last: int = _ge(2, 1)


@dataclass
class RayConfig:
    address: str = ""  # empty: start a local Ray; "auto" or ray://... : join a cluster
    num_cpus: int = _ge(0, 0)  # local Ray only; 0: all cores


TRAINING_STAGES = ("warmup", "cold_start", "rft", "grpo")  # the pipeline's order


@dataclass
class RunConfig:
    name: str = "tiny-cpu"
    seed: int = 0
    output_dir: str = "outputs/tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    rft: RFTConfig = field(default_factory=RFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def resolve_path(name_or_path: str) -> Path:
    """A config file path, or the name of one under configs/ (``tiny_cpu``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {name_or_path!r} not found (named configs: {known})")


def load(path: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The validated run config: schema defaults <- YAML file <- `key=value` overrides."""
    cfg = OmegaConf.structured(RunConfig)
    file = resolve_path(path or DEFAULT_CONFIG)
    try:
        from_file = OmegaConf.load(file)
    except Exception as exc:  # yaml errors carry line numbers in several lines
        raise ConfigError(f"{file}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(from_file, DictConfig):
        raise ConfigError(f"{file}: must be a mapping of sections, got a list")
    cfg = _merge(cfg, from_file, origin=str(file))
    cfg = _merge(cfg, _parse_overrides(overrides), origin="command line")
    validate(cfg)
    return cfg


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """`key=value` items; `key=` sets the empty string (OmegaConf alone reads it as null)."""
    items = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. protocol.memory_window=3")
        items.append(item if value else f"{key}=''")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"override: {_reason(exc)}") from None


def _merge(cfg: DictConfig, other: DictConfig, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except ConfigKeyError as exc:
        key = exc.full_key or str(exc.key)
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(cfg, parent) if parent else cfg
        allowed = ", ".join(node.keys()) if isinstance(node, DictConfig) else "none (not a section)"
        where = f"section '{parent}'" if parent else "the top level"
        raise ConfigError(f"{key}: unknown key in {where} ({origin}); allowed: {allowed}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{key}: {_reason(exc)} ({origin})") from None


def _reason(exc: OmegaConfBaseException) -> str:
    """The first line of an OmegaConf message, without its key/object_type trailer."""
    return str(exc).strip().splitlines()[0]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value outside its field's bounds or a broken cross-rule."""
    _check_bounds(cfg, RunConfig, prefix="")
    _check_rules(cfg)


def _check_bounds(node: DictConfig, schema: type, prefix: str) -> None:
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        value = node[f.name]
        if isinstance(value, DictConfig):
            _check_bounds(value, type(f.default_factory()), prefix=f"{key}.")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} = {value}: must be a finite number")
        low_ge, low_gt, high = f.metadata.get("ge"), f.metadata.get("gt"), f.metadata.get("le")
        if low_ge is not None and value < low_ge:
            raise ConfigError(f"{key} = {value}: must be >= {low_ge}" + _bounds_hint(f))
        if low_gt is not None and value <= low_gt:
            raise ConfigError(f"{key} = {value}: must be > {low_gt}")
        if high is not None and value > high:
            raise ConfigError(f"{key} = {value}: must be <= {high}" + _bounds_hint(f))


def _bounds_hint(f: dataclasses.Field) -> str:
    low, high = f.metadata.get("ge"), f.metadata.get("le")
    return f" (allowed: {low} to {high})" if low is not None and high is not None else ""


def _check_rules(cfg: DictConfig) -> None:
    """Rules that tie several keys together."""
    unknown = [d for d in cfg.protocol.dimensions if d not in DIMENSIONS]
    if unknown or not cfg.protocol.dimensions:
        raise ConfigError(f"protocol.dimensions = {list(cfg.protocol.dimensions)}: "
                          f"must be a non-empty subset of {list(DIMENSIONS)}")
    if len(set(cfg.protocol.dimensions)) != len(cfg.protocol.dimensions):
        raise ConfigError(f"protocol.dimensions = {list(cfg.protocol.dimensions)}: has duplicates")
    try:
        tiny_spec(cfg.model.tiny_spec)
    except VrtError as exc:
        raise ConfigError(f"model.tiny_spec: {exc}") from None
    if cfg.warmup.restate_share > 0 and cfg.warmup.restate_per_pair == 0:
        raise ConfigError(f"warmup.restate_share = {cfg.warmup.restate_share}: needs "
                          "warmup.restate_per_pair >= 1 (no restating sequences to draw)")
    copy_kinds, known = list(cfg.warmup.copy_kinds), (*TEXT_COPY_KINDS, FRAME_IMAGES)
    if not copy_kinds or set(copy_kinds) - set(known):
        raise ConfigError(f"warmup.copy_kinds = {copy_kinds}: must be a non-empty list of "
                          f"{', '.join(known)}")
    for key in ("warmup", "cold_start"):
        text_only = set(copy_kinds) & set(TEXT_COPY_KINDS)
        if cfg[key].copying_per_step and text_only and cfg.learner.zero_stage == 3:
            raise ConfigError(f"{key}.copying_per_step = {cfg[key].copying_per_step}: text-only "
                              "copying sequences beside image ones need learner.zero_stage <= 2 "
                              "(ZeRO-3 gathers each module in the order the ranks run them)")
    kinds = list(cfg.cold_start.slip_kinds)
    if not kinds or set(kinds) - {"cut", "range"}:
        raise ConfigError(f"cold_start.slip_kinds = {kinds}: must be a non-empty list of "
                          "cut, range")
    c = cfg.cold_start
    if c.epochs == 0 and c.first_turn_steps == c.answer_turn_steps == c.copy_turn_steps == 0:
        raise ConfigError("cold_start.epochs = 0: needs cold_start.first_turn_steps, "
                          "answer_turn_steps or copy_turn_steps >= 1 (nothing to train)")
    if cfg.video.min_pixels > cfg.video.max_pixels:
        raise ConfigError(f"video.min_pixels = {cfg.video.min_pixels}: must be <= "
                          f"video.max_pixels ({cfg.video.max_pixels})")
    if cfg.data.synthetic.min_frames > cfg.data.synthetic.max_frames:
        raise ConfigError(f"data.synthetic.min_frames = {cfg.data.synthetic.min_frames}: must be "
                          f"<= data.synthetic.max_frames ({cfg.data.synthetic.max_frames})")
    if cfg.data.synthetic.size % 8:
        raise ConfigError(f"data.synthetic.size = {cfg.data.synthetic.size}: must be a multiple of 8")
    if cfg.rollout.engine == "vllm" and cfg.rollout.num_gpus <= 0:
        raise ConfigError("rollout.num_gpus = 0: the vllm engine needs a GPU per worker "
                          "(set rollout.num_gpus > 0 or rollout.engine=hf)")
    if cfg.learner.backend == "nccl" and cfg.learner.num_gpus_per_worker <= 0:
        raise ConfigError("learner.backend = nccl: needs learner.num_gpus_per_worker > 0 "
                          "(use gloo or auto on CPU)")
    if cfg.grpo.beta > 0 and cfg.reference.num_workers == 0:
        raise ConfigError(f"reference.num_workers = 0: grpo.beta = {cfg.grpo.beta} needs a "
                          "reference policy (set grpo.beta=0 or reference.num_workers >= 1)")
    if cfg.serve.max_ongoing_requests < cfg.serve.max_batch_size:
        raise ConfigError(f"serve.max_ongoing_requests = {cfg.serve.max_ongoing_requests}: must "
                          f"be >= serve.max_batch_size ({cfg.serve.max_batch_size}), or a batch "
                          "never fills")
    if cfg.serve.autoscaling and cfg.serve.min_replicas > cfg.serve.max_replicas:
        raise ConfigError(f"serve.min_replicas = {cfg.serve.min_replicas}: must be <= "
                          f"serve.max_replicas ({cfg.serve.max_replicas})")
    if len(cfg.learner.adam_betas) != 2 or not all(0 <= b < 1 for b in cfg.learner.adam_betas):
        raise ConfigError(f"learner.adam_betas = {list(cfg.learner.adam_betas)}: "
                          "must be two numbers in [0, 1)")
    edges = list(cfg.eval.length_buckets)
    if edges != sorted(set(edges)) or any(e <= 0 for e in edges):
        raise ConfigError(f"eval.length_buckets = {edges}: must be increasing positive frame counts")


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (what `config show` prints and runs log)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
