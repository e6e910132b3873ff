# kcloud-opt-predictor — every target creates .venv/ and installs what it needs on first use.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DATA    ?= tests/data/upm_sample.csv
MODEL_PATH ?= $(CURDIR)/trained_models
# A private local Ray cluster: Ray's token authentication on (app.local_ray_token writes ~/.ray/auth_token once,
# mode 0600; the `ray` and `serve` CLI send it when RAY_AUTH_MODE=token is set where they run, see README), and the Ray that `make run` /
# `train` / `evaluate` start listens on the loopback address only (Ray's switch for that, named for Windows and
# macOS, works on Linux too), but for each Serve replica's inter-deployment gRPC port, which Ray binds to every
# interface and only the token guards. With RAY_ADDRESS set (but to `local`) the commands join that cluster instead.
run run-api train evaluate: export RAY_AUTH_MODE ?= token
ifeq ($(filter-out local,$(strip $(RAY_ADDRESS))),)
run run-api train evaluate: export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
endif
export MODEL_PATH
# Serve settings measured to help on small nodes (bench/bench_serve.py; core/serve_tuning.py says why): user
# code and router on the replica's event loop, request-path logs buffered, proxy to replicas over gRPC. A value
# already in your environment wins.
run run-api: export RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD ?= 0
run run-api: export RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP ?= 0
run run-api: export RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE ?= 1000
run run-api: export RAY_SERVE_PROXY_USE_GRPC ?= 1
run run-api: export RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH ?= 67108864
# What a job submitted to that cluster (`ray job submit ... -- python -m training.train_lstm ...`) inherits from
# its raylet: the venv's python first on PATH, and the service's registry and state by absolute path, so a job's
# model lands where the service serves from (not in the job's copy of the working directory) and takes the
# service's retrain lock.
run run-api: export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
run run-api: export KCLOUD_STATE_PATH ?= $(CURDIR)/state

.PHONY: install test-servers run run-api test test-fast train evaluate bench lint check-config image image-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=26.3,<27'  # bounded: its resolution of the torch wheel is relied on
	# torch first, at the version the project is tested with: the CPU build where pip's index offers it (as on
	# the CI machine); PyPI's Linux x86_64 wheel is a CUDA build (README, GPU machines: install the CPU one from
	# PyTorch's index first). GPU users: install their CUDA build into .venv first; an installed torch is kept.
	$(PY) -c "import sys, torch; sys.exit(tuple(map(int, torch.__version__.split('.')[:2])) < (2, 3))" 2>/dev/null \
		|| $(PY) -m pip install --quiet torch==2.13.0  # none, or one older than the project takes
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test-servers:
	scripts/install-test-servers.sh

# The Python packages and the test servers (Debian packages) install side by side: neither waits on the other.
test:
	$(MAKE) --no-print-directory -j2 install test-servers
	$(PY) scripts/install-kustomize.py
	$(PY) -m pytest -q

# Everything but the tests that train models (marked `slow`): a quick loop while editing.
test-fast:
	$(MAKE) --no-print-directory -j2 install test-servers
	$(PY) scripts/install-kustomize.py
	$(PY) -m pytest -q -m "not slow"

train: install
	$(PY) -m app.local_ray_token
	$(PY) -m training.train_lstm --data $(DATA)

evaluate: install
	$(PY) -m app.local_ray_token
	$(PY) -m training.evaluate --data $(DATA) --output reports/backtest.json --plot reports/backtest.png

bench: install
	$(PY) bench/bench_inference.py
	$(PY) bench/bench_backtest.py
	$(PY) bench/bench_train_overhead.py
	$(PY) bench/bench_train_memory.py --nodes 100 --days 14 --no-gbm
	$(PY) bench/bench_serve.py
	$(PY) bench/bench_collector.py --interval 5s
	$(PY) bench/bench_store.py
	$(PY) bench/bench_controller.py
	$(PY) bench/bench_hostile_input.py

lint: install
	$(VENV)/bin/ruff check .

# Check a config file without starting anything (default: the one every command reads): prints the effective
# settings, or the file, the dotted key and the reason of every problem (exit status 2).
CONFIG ?=
check-config: install
	$(PY) -m app.check_config $(CONFIG)

# The API token: yours ($API_TOKEN or $API_TOKEN_FILE), else one generated once into state/api-token (mode
# 0600, reused afterwards; its path and usage are printed, never the token). Writes need it; none = closed.
ifeq ($(strip $(API_TOKEN)$(API_TOKEN_FILE)),)
LOCAL_TOKEN_FILE := $(CURDIR)/state/api-token
run run-api: export API_TOKEN_FILE := $(LOCAL_TOKEN_FILE)
TOKEN := $(PY) -m app.local_token $(LOCAL_TOKEN_FILE)
else
TOKEN := @true
endif

# The whole service on a local Ray: demo models first if the registry has none, then both Serve apps.
run: install
	$(PY) -m app.local_dashboard
	$(PY) -m app.local_ray_token
	$(PY) -m app.demo_model --data $(DATA)
	$(TOKEN)
	$(VENV)/bin/serve run --address "$${RAY_ADDRESS:-local}" serve_config.yaml

# Only the Serve apps (the REST API), on the models already in MODEL_PATH.
run-api: install
	$(PY) -m app.local_dashboard
	$(PY) -m app.local_ray_token
	$(TOKEN)
	$(VENV)/bin/serve run --address "$${RAY_ADDRESS:-local}" serve_config.yaml

# Container images (Dockerfile, Dockerfile.gpu): the service as `make run` runs it, or Ray nodes on KubeRay.
image:
	docker build -t kcloud-opt/predictor:cpu .

image-gpu:
	docker build -t kcloud-opt/predictor:gpu -f Dockerfile.gpu .

clean:
	rm -rf $(VENV) .pytest_cache reports
