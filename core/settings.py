"""Settings building blocks every package uses: config-file sections, environment settings, secrets, errors.

The config file (YAML) is shared: each package validates only its own top-level keys with its own frozen
model (`load_keys`), and the app validates the whole file at once. `models` and `features` may also sit under
`predictor`, as in the seed's config.yaml; they mean the same there. Environment variables are read through
`EnvSettings` models (pydantic-settings), once per call of `from_env`; a blank variable counts as unset.
Every failure is a `ConfigError` naming the file (or variable), the dotted key and the reason.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from core.durations import parse_duration

logger = logging.getLogger(__name__)

CONFIG_ENV = "KCLOUD_CONFIG"
ROOT_CONFIG_PATH = Path("config.yaml")
DEFAULT_CONFIG_PATH = Path("configs/config.yaml")
NESTED_UNDER_PREDICTOR = ("models", "features")
"""Top-level keys the seed's layout writes under `predictor` (`predictor.models` is `models`)."""
TOP_LEVEL_KEYS = frozenset({
    "predictor", "models", "features", "model_path", "storage_path",  # training
    "telemetry", "gpu_monitoring_enabled", "ipmi_hosts",  # collectors
    "auto_scaling", "workloads",  # autoscaler
    "influx_host",  # core.stores
})
"""Every top-level key of the config file (the app's ServiceConfig has exactly these; a test checks)."""

_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


class ConfigError(ValueError):
    """The config file or an environment variable is invalid; the message says where and why."""


class Section(BaseModel):
    """Base of every config-file model: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _seconds(value: object) -> int:
    if not isinstance(value, str | int | float):
        raise ValueError(f"a {type(value).__name__} is not a duration like '15s', '10min', '1h' or '7d'")
    return parse_duration(value)


Duration = Annotated[int, BeforeValidator(_seconds)]
"""Whole seconds; YAML may spell it "10min", "1h", "7d" or give bare seconds."""


def _flag(value: object) -> object:
    if isinstance(value, str):
        text = value.strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValueError(f"{value!r} is not a boolean; use true/false, 1/0 or yes/no")
        return text in _TRUE
    return value


EnvBool = Annotated[bool, BeforeValidator(_flag)]
"""A boolean variable: true/false, 1/0 or yes/no, any case."""

NonEmpty = Annotated[str, Field(min_length=1)]


def _each_once(nodes: tuple[str, ...]) -> tuple[str, ...]:
    repeated = sorted({node for node in nodes if nodes.count(node) > 1})
    if repeated:
        raise ValueError(f"a node is listed more than once: {', '.join(repeated)} (its power would be summed twice)")
    return nodes


Workloads = dict[NonEmpty, Annotated[tuple[NonEmpty, ...], Field(min_length=1), AfterValidator(_each_once)]]
"""workload_id -> telemetry node ids (the config's `workloads` map; the app and the autoscaler read it)."""


def _key_path(loc: tuple[int | str, ...], written: Mapping[str, str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else written.get(part, part))
    return path or "(top level)"


def format_errors(source: str | None, error: ValidationError, written: Mapping[str, str] | None = None, *,
                  show_input: bool = True) -> str:
    """One line per pydantic error: `source: dotted.key: reason (got value)` (no prefix when source is None; no
    value without `show_input`: input that may hold a secret).

    `written` maps a top-level key to where the file wrote it (`models` -> `predictor.models`)."""
    lines = []
    for item in error.errors():
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        else:
            reason = item["msg"].removeprefix("Value error, ")
            if show_input and item["type"] != "value_error" and not isinstance(item["input"], dict | list | tuple):
                reason += f" (got {item['input']!r})"
        key = _key_path(item["loc"], written or {})
        lines.append(f"{source}: {key}: {reason}" if source else f"{key}: {reason}")
    return "\n".join(lines)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what a YAML error is, without the text of the line: a broken line may hold a secret (a BMC map's
    password), and the message goes to logs and status."""
    if isinstance(error, yaml.reader.ReaderError):  # a control character or a bad encoding: no line text in it
        return f" at character {error.position}: {error.reason}"
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = [part for part in (getattr(error, "context", None), getattr(error, "problem", None)) if part]
    return f"{where}: {'; '.join(what)}" if what else where


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one silently, so a
    section written twice lost the first's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be followed by overrides
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                shown = str(key) if len(str(key)) <= 64 else f"{str(key)[:64]}..."
                raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                        f"key {shown!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """YAML text as data, safely, a key given twice in one mapping refused (yaml.YAMLError)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader


def read_yaml_mapping(path: Path, *, label: str | None = None, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); ConfigError prefixed with `label` (the path)."""
    label = label or str(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{label}: {what} not found") from exc
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {what}: {exc}") from exc
    except UnicodeDecodeError as exc:  # not the byte: a file may hold secrets (a BMC map's passwords)
        raise ConfigError(f"{label}: {what} is not UTF-8 text (at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML{_yaml_problem(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: top level must be a mapping of keys, not {type(data).__name__}")
    return data


def environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """`environ`, or the process environment when None (the one place that reads it)."""
    return os.environ if environ is None else environ


CONFIG_FLAG_HELP = "service config YAML (default: $KCLOUD_CONFIG, else ./config.yaml, else configs/config.yaml)"
"""The help of every command's --config flag: the lookup `config_path` does."""


def config_path(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: `path`, else $KCLOUD_CONFIG, else ./config.yaml, else configs/config.yaml (the
    first that exists; a warning when both do), else None (the defaults)."""
    if path is None:
        path = environment(environ).get(CONFIG_ENV) or None
    if path is None:
        found = [candidate for candidate in (ROOT_CONFIG_PATH, DEFAULT_CONFIG_PATH) if candidate.is_file()]
        if len(found) == 2:
            _warn_both(str(Path.cwd()))
        path = found[0] if found else None
    return Path(path) if path is not None else None


@functools.cache
def _warn_both(directory: str) -> None:
    """Once per working directory: both default files exist, and only ./config.yaml is read."""
    logger.warning("%s: both %s and %s exist; reading %s only (set $%s to choose)", directory, ROOT_CONFIG_PATH,
                   DEFAULT_CONFIG_PATH, ROOT_CONFIG_PATH, CONFIG_ENV)


def lift_predictor_keys(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The file's keys with `predictor.models` / `predictor.features` moved to the top level, where they live.

    Returns the keys, where each moved key was written (for error messages), and the errors: a key given at
    both places (`source: predictor.models and models: ...`).
    """
    predictor = data.get("predictor")
    nested = [key for key in NESTED_UNDER_PREDICTOR if isinstance(predictor, Mapping) and key in predictor]
    if not nested:
        return dict(data), {}, []
    errors = [f"{source}: predictor.{key} and {key}: both given; write {key} at one place only (top level or "
              f"under predictor, they mean the same)" for key in nested if key in data]
    lifted = {**data, "predictor": {key: value for key, value in predictor.items() if key not in nested}}
    lifted.update({key: predictor[key] for key in nested if key not in data})
    return lifted, {key: f"predictor.{key}" for key in nested}, errors


S = TypeVar("S", bound=Section)


def load_keys(model: type[S], path: str | Path | None = None, environ: Mapping[str, str] | None = None, *,
              overrides: Iterable[type[EnvSettings]] = ()) -> S:
    """Validate the top-level keys `model` declares (the other keys are left to their packages), then apply
    the environment overrides (each EnvSettings field named as the key it overrides).

    Without `path` the file is found by `config_path`; without a file, the defaults. A top-level key no
    package knows is refused; `models` and `features` may be written under `predictor` (`lift_predictor_keys`).

    Raises:
        ConfigError: naming the file (or variable), the dotted key and the reason (all errors listed).
    """
    found = config_path(path, environ)
    data = read_yaml_mapping(found) if found is not None else {}
    source = str(found) if found is not None else "defaults"
    errors = [f"{source}: {key}: unknown key" for key in sorted(map(str, data)) if key not in TOP_LEVEL_KEYS]
    data, written, both = lift_predictor_keys(data, source)
    errors += both
    try:
        config = model.model_validate({key: value for key, value in data.items() if key in model.model_fields})
    except ValidationError as exc:
        errors.append(format_errors(source, exc, written))
    if errors:
        raise ConfigError("\n".join(errors))
    changed: dict[str, Any] = {}
    for settings in overrides:
        changed.update(settings.from_env(environ).model_dump(exclude_unset=True))
    if not changed:
        return config
    try:
        return model.model_validate({**config.model_dump(exclude_unset=True), **changed})  # defaults stay defaults
    except ValidationError as exc:
        raise ConfigError(format_errors("environment", exc)) from None


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {name: value for name, value in environ.items() if value.strip()}  # blank: unset
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class EnvSettings(BaseSettings):
    """Base of the settings read from environment variables: each field's alias is its variable.

    Frozen; names are case-sensitive; an empty or blank variable counts as unset. Build with `from_env`,
    which reads the mapping it is given (default: the process environment) once.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=True, env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment comes in through from_env only

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from `environ` (default: the process environment); ConfigError names each variable."""
        try:
            return cls(**_MappingEnvSource(cls, environment(environ))())
        except ValidationError as exc:
            raise ConfigError(format_errors(None, exc)) from None


SECRET_MASK = "********"
# to the last `@` of the text's word: a password may hold `/` or `@` (unencoded; the store settings refuse that,
# but text from elsewhere may carry it), and masking a path's `@` too only hides more
_URL_PASSWORD = re.compile(r"(?P<user>//[^/@:\s]*:)\S*@")


_URL_USER_ALONE = re.compile(r"//[^/@:\s]+@")  # scheme://apikey@host: a user alone is a secret too


ADDRESS_KEY = re.compile(r"(_HOST|_URL)$", re.IGNORECASE)
"""Settings that name a server: the clients read them with or without a scheme (INFLUX_HOST=user:pw@host:8086)."""


def address_without_login(value: str) -> str:
    """A server address (a URL, or host:port without a scheme) with its login masked."""
    return without_url_password(value) if "://" in value else without_url_password(f"//{value}")[2:]


def without_url_password(text: str) -> str:
    """`text` with the password of every URL in it (``scheme://user:password@host``) masked, and a user given alone
    (``scheme://apikey@host``, an API key) too: for logs and errors."""
    return _URL_USER_ALONE.sub(f"//{SECRET_MASK}@", _URL_PASSWORD.sub(rf"\g<user>{SECRET_MASK}@", text))


def read_secret(name: str, value: SecretStr | None, file: str | Path | None) -> SecretStr | None:
    """The secret `name`: the contents of the file $`name`_FILE names (it wins; a trailing line break is
    dropped), else the value of $`name`; None when neither is set.

    Raises:
        ConfigError: the file cannot be read or is empty (naming the variable and the file, never the secret).
    """
    if file is None or not str(file).strip():
        return value
    try:
        text = Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{name}_FILE {file} cannot be read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}_FILE {file} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{name}_FILE {file} is empty")
    return SecretStr(text)


TEMPLATE_PLACEHOLDER = "REPLACE_ME"  # what the Secret templates (deploy/secrets) ship in place of every value


def refuse_template_ray_token(environ: Mapping[str, str] = os.environ) -> None:
    """ConfigError when Ray's own token (RAY_AUTH_TOKEN, which KubeRay sets from Secret kcloud-ray-auth) is the
    Secret template's placeholder: the dashboard and the job API, which run code on the cluster, would take a token
    anyone with the repository knows. The Serve apps and the command lines of training.cli.run_cli (a RayJob's
    entrypoint) check it."""
    if environ.get("RAY_AUTH_TOKEN", "").startswith(TEMPLATE_PLACEHOLDER):
        raise ConfigError(f"Ray's auth token (RAY_AUTH_TOKEN, Secret kcloud-ray-auth) is still the template's "
                          f"{TEMPLATE_PLACEHOLDER} placeholder (deploy/secrets/secrets.yaml): set a secret value of "
                          "your own")
