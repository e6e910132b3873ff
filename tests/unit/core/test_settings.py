"""The settings building blocks: file resolution, key loading, errors, environment settings and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from core.settings import (
    ConfigError,
    Duration,
    EnvBool,
    EnvSettings,
    Section,
    config_path,
    load_keys,
    read_secret,
)


class Sample(Section):
    """A package's keys, as a package would declare them."""

    model_path: str = "models"
    telemetry: dict[str, Duration] = {}


class SampleOverrides(EnvSettings):
    model_path: str | None = Field(None, alias="MODEL_PATH")


class Flags(EnvSettings):
    enabled: EnvBool = Field(True, alias="FLAG")
    token: SecretStr | None = Field(None, alias="TOKEN")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_keys(Sample, path, {} if environ is None else environ, overrides=[SampleOverrides])
    return str(caught.value)


def test_file_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path(environ={}) is None
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "config.yaml").write_text("")
    assert config_path(environ={}) == Path("configs/config.yaml")
    assert config_path(environ={"KCLOUD_CONFIG": "/etc/k.yaml"}) == Path("/etc/k.yaml")
    assert config_path("given.yaml", environ={"KCLOUD_CONFIG": "/etc/k.yaml"}) == Path("given.yaml")


def test_a_config_yaml_at_the_root_is_read_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12: the seed's `cp config.example.yaml config.yaml` at the repository root was not read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("model_path: from_root\n")
    assert config_path(environ={}) == Path("config.yaml")
    assert load_keys(Sample, environ={}).model_path == "from_root"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "config.yaml").write_text("model_path: from_configs\n")
    with caplog.at_level("WARNING", logger="core.settings"):
        assert load_keys(Sample, environ={}).model_path == "from_root"
        assert config_path(environ={}) == Path("config.yaml")
    warnings = [r.getMessage() for r in caplog.records if r.name == "core.settings"]
    assert len(warnings) == 1  # once, however often the file is looked up
    assert "both config.yaml and configs/config.yaml exist; reading config.yaml only" in warnings[0]
    assert config_path(environ={"KCLOUD_CONFIG": "/etc/k.yaml"}) == Path("/etc/k.yaml")  # the variable wins
    (tmp_path / "config.yaml").unlink()
    assert config_path(environ={}) == Path("configs/config.yaml")


class Training(Section):
    """Keys a package may find under `predictor` in the seed's layout."""

    predictor: dict[str, Duration] = {}
    models: dict[str, dict[str, int]] = {}
    features: tuple[str, ...] = ()


def test_models_and_features_may_sit_under_predictor(tmp_path: Path) -> None:
    nested = write(tmp_path, "predictor:\n  step: 1min\n  models: {m: {size: 3}}\n  features: [a, b]\n")
    flat = tmp_path / "flat.yaml"
    flat.write_text("predictor:\n  step: 1min\nmodels: {m: {size: 3}}\nfeatures: [a, b]\n")
    assert load_keys(Training, nested, {}) == load_keys(Training, flat, {}) == Training(
        predictor={"step": 60}, models={"m": {"size": 3}}, features=("a", "b"))
    assert load_keys(Sample, nested, {}) == Sample()  # other packages' keys are left to them, wherever written


def test_nested_errors_name_the_key_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "predictor:\n  models: {m: {size: big}}\n")
    with pytest.raises(ConfigError) as caught:
        load_keys(Training, path, {})
    assert str(caught.value).startswith(f"{path}: predictor.models.m.size: Input should be a valid integer")


def test_a_key_both_under_predictor_and_at_the_top_is_refused_naming_both(tmp_path: Path) -> None:
    path = write(tmp_path, "predictor:\n  features: [a]\nfeatures: [b]\nmodels: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_keys(Training, path, {})
    assert str(caught.value) == (f"{path}: predictor.features and features: both given; write features at one "
                                 "place only (top level or under predictor, they mean the same)")


@pytest.mark.parametrize(("text", "expected"), [("30m", 1800), ("10min", 600), ("1h", 3600), ("90", 90)])
def test_durations(tmp_path: Path, text: str, expected: int) -> None:
    path = write(tmp_path, f"telemetry:\n  stale_after: {text}\n")
    assert load_keys(Sample, path, {}).telemetry["stale_after"] == expected


def test_only_the_models_keys_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "model_path: here\npredictor: {step: 5 parsecs}\n")
    assert load_keys(Sample, path, {}) == Sample(model_path="here")


def test_errors_name_file_dotted_key_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "telemetry:\n  stale_after: soon\nmodel_path: [1]\nno_such_key: 1\n")
    lines = error_of(path).splitlines()
    assert lines[0] == f"{path}: no_such_key: unknown key"  # a key no package knows
    assert lines[1].startswith(f"{path}: model_path: Input should be a valid string")
    assert lines[2].startswith(f"{path}: telemetry.stale_after: ") and "soon" in lines[2]
    assert len(lines) == 3


def test_env_overrides_apply_after_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "model_path: in_file\n")
    assert load_keys(Sample, path, {"MODEL_PATH": "/srv"}, overrides=[SampleOverrides]).model_path == "/srv"
    assert load_keys(Sample, path, {"MODEL_PATH": " "}, overrides=[SampleOverrides]).model_path == "in_file"
    assert load_keys(Sample, path, {"MODEL_PATH": "/srv"}).model_path == "in_file"  # no overrides asked for


def test_missing_file_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert error_of(missing) == f"{missing}: config file not found"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_keys(Sample, environ={"KCLOUD_CONFIG": str(missing)})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_refused(tmp_path: Path, text: str) -> None:
    message = error_of(write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'config.yaml'}: top level must be a mapping")


def test_unparsable_yaml_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "predictor: [unclosed\n"))
    assert message.startswith(f"{tmp_path / 'config.yaml'}: not valid YAML at line 2, column 1: ")


def test_regression_a_key_given_twice_is_refused_not_overwritten(tmp_path: Path) -> None:
    """A section written twice kept only the last one silently (`check_config` said valid)."""
    message = error_of(write(tmp_path, "predictor:\n  step: 1min\nmodels: {}\npredictor:\n  step: 2min\n"))
    assert message == f"{tmp_path / 'config.yaml'}: not valid YAML at line 4, column 1: while reading a mapping; key " \
                      "'predictor' given twice"
    nested = error_of(write(tmp_path, "nodes:\n  gpu-1: {address: a, address: b}\n"))
    assert "key 'address' given twice" in nested


def test_a_control_character_says_where_it_is(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "nodes:\n  password: S3cr3t\x07\n"))
    assert "not valid YAML at character 25: special characters are not allowed" in message
    assert "S3cr3t" not in message


@pytest.mark.parametrize("line", ['  password: "Sup3r"Secr3t!"', '\tpassword: Sup3rSecr3t!',
                                  '  p@ss: word: Sup3rSecr3t!'])
def test_a_yaml_error_never_shows_the_broken_line(tmp_path: Path, line: str) -> None:
    """The message reaches logs and a collector's status; the line may hold a BMC password."""
    message = error_of(write(tmp_path, f"nodes:\n  gpu-1:\n  address: 10.0.0.9\n{line}\n"))
    assert "not valid YAML at line" in message
    assert "Secr3t" not in message and "word" not in message


# -- environment settings -------------------------------------------------------------------------------
def test_env_settings_read_their_variables_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "no")
    flags = Flags.from_env()
    monkeypatch.setenv("FLAG", "yes")
    assert flags.enabled is False  # a snapshot: later changes of the environment do not leak in
    assert Flags.from_env().enabled is True
    with pytest.raises(ValueError):
        flags.enabled = True  # type: ignore[misc]


@pytest.mark.parametrize(("value", "expected"), [("TRUE", True), ("1", True), ("Yes", True), ("false", False),
                                                 ("0", False), ("NO", False), ("", True), ("  ", True)])
def test_env_booleans(value: str, expected: bool) -> None:
    assert Flags.from_env({"FLAG": value}).enabled is expected


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Flags.from_env({"FLAG": "maybe"})
    assert str(caught.value) == "FLAG: 'maybe' is not a boolean; use true/false, 1/0 or yes/no"


def test_env_secrets_never_show() -> None:
    flags = Flags.from_env({"TOKEN": "s3cr3t"})
    assert "s3cr3t" not in repr(flags) and flags.token is not None and flags.token.get_secret_value() == "s3cr3t"


# -- *_FILE secrets -------------------------------------------------------------------------------------
def test_secret_file_wins_over_the_variable(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\r\n")
    assert read_secret("TOKEN", SecretStr("from-env"), str(secret)).get_secret_value() == "from-file"
    assert read_secret("TOKEN", SecretStr("from-env"), None).get_secret_value() == "from-env"
    assert read_secret("TOKEN", SecretStr("from-env"), " ").get_secret_value() == "from-env"
    assert read_secret("TOKEN", None, None) is None


def test_empty_or_unreadable_secret_file_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as caught:
        read_secret("TOKEN", SecretStr("from-env"), str(empty))
    assert str(caught.value) == f"TOKEN_FILE {empty} is empty"
    with pytest.raises(ConfigError) as caught:
        read_secret("TOKEN", None, str(tmp_path / "missing"))
    assert str(caught.value) == f"TOKEN_FILE {tmp_path / 'missing'} cannot be read: No such file or directory"
