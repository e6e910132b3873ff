"""Check a config file without starting anything: `python -m app.check_config [PATH]`, also
`make check-config CONFIG=PATH` and `kcloud-check-config [PATH]`.

The file is validated as the service reads it: every package's keys at once, the environment's overrides
(MODEL_PATH, KCLOUD_STORAGE_PATH, GPU_MONITORING_ENABLED, IPMI_HOSTS, INFLUX_HOST) and the policies under
`auto_scaling.policies`. Valid: the effective settings are printed as YAML (every section, durations in
seconds, secrets masked) and the exit status is 0. Invalid: one line per problem, `file: dotted.key: reason`,
on stderr, and exit status 2. Without PATH, the file every command would read (`core.settings.config_path`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from app.settings import SECRET_NAME, ServiceConfig, load_service_config
from autoscaler.policy_config import policies_from_config
from core.settings import (
    ADDRESS_KEY,
    SECRET_MASK,
    ConfigError,
    address_without_login,
    config_path,
    environment,
    without_url_password,
)
from training.settings import TrainingOverrides

MASK = SECRET_MASK
OVERRIDING = (*(field.alias for field in TrainingOverrides.model_fields.values()),
              "GPU_MONITORING_ENABLED", "IPMI_HOSTS", "INFLUX_HOST")
"""The environment variables that override config keys (the training ones, the collectors' two, the store's)."""
ORDER = ("predictor", "models", "features", "auto_scaling", "workloads", "telemetry", "model_path", "storage_path",
         "influx_host", "gpu_monitoring_enabled", "ipmi_hosts")
"""The sections in config.example.yaml's order (a key not listed comes last)."""


def masked(value: Any, key: str = "") -> Any:
    """`value` with secrets replaced: any value under a secret-sounding key, and passwords inside URLs."""
    if isinstance(value, Mapping):
        return {name: masked(item, str(name)) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item, key) for item in value]
    if isinstance(value, str):
        if SECRET_NAME.search(key):
            return MASK
        return address_without_login(value) if ADDRESS_KEY.search(key) else without_url_password(value)
    return value


def check(path: str | Path | None, environ: Mapping[str, str] | None = None) -> tuple[Path | None, ServiceConfig]:
    """The file that was checked (None: no file, the defaults) and its effective settings. Raises ConfigError."""
    found = config_path(path, environ)
    config = load_service_config(found, environ)
    policies_from_config(config, str(found) if found is not None else "defaults")
    return found, config


def report(found: Path | None, config: ServiceConfig, environ: Mapping[str, str] | None = None) -> str:
    """The effective settings as commented YAML."""
    env = environment(environ)
    overridden = [name for name in OVERRIDING if env.get(name, "").strip()]
    lines = [f"# {found}: valid" if found is not None else
             "# no config file (no $KCLOUD_CONFIG, ./config.yaml or configs/config.yaml): the defaults apply",
             "# effective settings; durations in seconds" + (f"; from the environment: {', '.join(overridden)}"
                                                              if overridden else "")]
    settings = config.model_dump(mode="json")
    ordered = {key: settings[key] for key in sorted(settings, key=lambda k: ORDER.index(k) if k in ORDER else 99)}
    body = yaml.safe_dump(masked(ordered), sort_keys=False, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check_config", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", help="config file (default: the one every command would read)")
    args = parser.parse_args(argv)
    try:
        found, config = check(args.path)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except Exception as exc:  # noqa: BLE001 - a checker never ends in a traceback
        sys.stderr.write(f"{args.path or 'config'}: cannot check: {type(exc).__name__}: {exc}\n")
        return 2
    sys.stdout.write(report(found, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
