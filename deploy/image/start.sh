#!/usr/bin/env bash
# The images' default command: what `make run` does, on a private Ray inside the container. Demo models
# first when the registry ($MODEL_PATH) has none, then both Serve apps of serve_config.yaml, with Serve's
# HTTP on 0.0.0.0:8002 (see container_serve_config.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

# As in the Makefile: a private local Ray (Ray's token authentication on: every Serve replica's gRPC port listens
# on every interface of the container), the registry, Serve's tuned settings.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
[ -n "${RAY_ADDRESS:-}" ] || export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0}"  # Ray on loopback
export MODEL_PATH="${MODEL_PATH:-trained_models}"
export RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD="${RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD:-0}"
export RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP="${RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP:-0}"
export RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE="${RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE:-1000}"
export RAY_SERVE_PROXY_USE_GRPC="${RAY_SERVE_PROXY_USE_GRPC:-1}"
export RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH="${RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH:-67108864}"

python -m app.local_ray_token
python -m app.demo_model --data "${DATA:-tests/data/upm_sample.csv}"
config="$(mktemp --suffix=.yaml)"
python deploy/image/container_serve_config.py serve_config.yaml "$config"
exec serve run --address "${RAY_ADDRESS:-local}" "$config"
