"""Config loading, overrides and the one-line validation errors."""
import subprocess
import sys

import pytest

from vrt_ray import config
from vrt_ray.config import ConfigError


@pytest.mark.parametrize("name", ["tiny_cpu", "qwen2_5_vl_7b"])
def test_shipped_configs_load_and_validate(name):
    cfg = config.load(name)
    assert cfg.protocol.max_frames_per_call == 8
    assert set(cfg.protocol.dimensions) == {"TA", "VQ", "MQ"}


def test_cluster_config_asks_for_gpus_and_vllm():
    cfg = config.load("qwen2_5_vl_7b")
    assert cfg.rollout.engine == "vllm" and cfg.rollout.num_gpus == 1
    assert cfg.learner.backend == "nccl" and cfg.learner.zero_stage == 3
    assert cfg.video.max_pixels == 448 * 448 and cfg.protocol.initial_frames == 4


def test_config_by_path_and_overrides_apply_with_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("protocol:\n  memory_window: 5\nlearner:\n  lr: 0.5\n")
    cfg = config.load(str(path), ["protocol.memory_window=3", "grpo.group_size=6",
                                  "rollout.engine=hf", "learner.lr=2e-5"])
    assert cfg.protocol.memory_window == 3
    assert cfg.grpo.group_size == 6 and isinstance(cfg.grpo.group_size, int)
    assert cfg.learner.lr == pytest.approx(2e-5)
    assert cfg.model.path == config.RunConfig().model.path  # untouched keys keep defaults


def test_an_empty_override_is_the_empty_string():
    cfg = config.load("tiny_cpu", ["tracking.registered_model=", "ray.address="])
    assert cfg.tracking.registered_model == "" and cfg.ray.address == ""


def test_file_value_survives_when_not_overridden(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("grpo:\n  beta: 0.05\n")
    assert config.load(str(path)).grpo.beta == pytest.approx(0.05)


BAD = [
    (["protocol.memory_window=0"], "protocol.memory_window", ">= 1"),
    (["learner.lr=-0.001"], "learner.lr", "> 0"),
    (["protocol.memory_windw=2"], "protocol.memory_windw", "allowed: preset, dimensions"),
    (["bogus=1"], "bogus", "allowed: name, seed"),
    (["protocol.max_turns=six"], "protocol.max_turns", "Integer"),
    (["rollout.engine=sglang"], "rollout.engine", "['hf', 'vllm']"),
    (["learner.zero_stage=4"], "learner.zero_stage", "0 to 3"),
    (["rollout.sampling.top_p=1.5"], "rollout.sampling.top_p", "<= 1.0"),
    (["grpo.beta=nan"], "grpo.beta", "finite"),
    (["protocol.dimensions=[TA,XX]"], "protocol.dimensions", "subset of"),
    (["video.min_pixels=90000", "video.max_pixels=50000"], "video.min_pixels", "<= video.max_pixels"),
    (["rollout.engine=vllm", "rollout.num_gpus=0"], "rollout.num_gpus", "needs a GPU"),
    (["reference.num_workers=0"], "reference.num_workers", "grpo.beta"),
    (["protocol.memory_window"], "protocol.memory_window", "key=value"),
    (["protocol.memory_window.x=3"], "protocol.memory_window", "Integer"),
    (["serve.replicas=2"], "serve.replicas", "allowed: host, port, app_name, route_prefix"),
    (["serve.max_ongoing_requests=4"], "serve.max_ongoing_requests", ">= serve.max_batch_size"),
    (["serve.autoscaling=true", "serve.min_replicas=3"], "serve.min_replicas", "<= serve.max"),
    (["serve.port=70000"], "serve.port", "0 to 65535"),
    (["model.tiny_spec=[hidden=256]"], "model.tiny_spec", "KEY one of bpe_vocab, hidden_size"),
    (["model.tiny_spec=[num_heads=3]"], "model.tiny_spec", "must split into num_heads 3"),
    (["model.tiny_spec=[num_layers=0]"], "model.tiny_spec", "num_layers must be > 0"),
    (["warmup.restate_share=0.5"], "warmup.restate_share", "needs warmup.restate_per_pair"),
    (["cold_start.epochs=0"], "cold_start.epochs", "needs cold_start.first_turn_steps"),
    (["cold_start.opening_turns=0"], "cold_start.opening_turns", ">= 1"),
    (["cold_start.slip_kinds=[cut,typo]"], "cold_start.slip_kinds", "list of cut, range"),
    (["cold_start.slip_kinds=[]"], "cold_start.slip_kinds", "non-empty"),
    (["warmup.restate_share=1.5", "warmup.restate_per_pair=2"], "warmup.restate_share", "<= 1"),
    (["warmup.copy_kinds=[frames,words]"], "warmup.copy_kinds",
     "frames, prompt, repeat, frame_images"),
    (["warmup.copy_kinds=[]"], "warmup.copy_kinds", "non-empty"),
    (["warmup.copy_steps=-1"], "warmup.copy_steps", ">= 0"),
    (["cold_start.copying_share=0.95"], "cold_start.copying_share", "<= 0.9"),
    (["warmup.copying_per_step=-2"], "warmup.copying_per_step", ">= 0"),
    (["cold_start.copying_per_step=4", "learner.zero_stage=3"], "cold_start.copying_per_step",
     "zero_stage <= 2"),
]


@pytest.mark.parametrize("overrides,key,allowed", BAD, ids=[b[0][0] for b in BAD])
def test_bad_value_is_one_line_naming_key_and_what_is_allowed(overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        config.load("tiny_cpu", overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key) or f"'{key}'" in message
    assert allowed in message


def test_copies_over_frames_alone_need_no_text_only_sequences_beside_zero3():
    cfg = config.load("tiny_cpu", ["warmup.copy_kinds=[frame_images]", "learner.zero_stage=3",
                                   "cold_start.copying_per_step=4"])
    assert list(cfg.warmup.copy_kinds) == ["frame_images"]


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learner:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"learner\.learning_rate: unknown key .*bad\.yaml"):
        config.load(str(path))


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rollout:\n  num_workers: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"rollout\.num_workers"):
        config.load(str(path))


def test_not_yaml_and_not_a_mapping(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("protocol: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        config.load(str(broken))
    assert "\n" not in str(err.value)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(str(listed))


def test_missing_config_names_the_known_ones():
    with pytest.raises(ConfigError, match="tiny_cpu"):
        config.load("no_such_config")


def test_cli_show_prints_resolved_config_and_bad_key_exits_2():
    cli = [sys.executable, "-m", "vrt_ray", "config", "show"]
    ok = subprocess.run(cli + ["tiny_cpu", "grpo.group_size=7"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "group_size: 7" in ok.stdout and "memory_window: 2" in ok.stdout
    bad = subprocess.run(cli + ["tiny_cpu", "grpo.group_size=1"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "grpo.group_size = 1: must be >= 2" in bad.stderr


@pytest.mark.parametrize("key", ["answer_turn_steps", "copy_turn_steps"])
def test_answer_or_copy_turn_steps_alone_are_something_to_train(key):
    cfg = config.load("tiny_cpu", ["cold_start.epochs=0", f"cold_start.{key}=5"])
    assert cfg.cold_start.epochs == 0 and cfg.cold_start[key] == 5
