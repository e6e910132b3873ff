"""What the model registry records per version (``metadata.json``), model ids, and its lookup error."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MODEL_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MODEL_ID_RE = re.compile(MODEL_ID_PATTERN)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return value.astimezone(UTC)


def check_model_id(model_id: str) -> str:
    """Return ``model_id`` if it is a safe folder name, else raise ValueError."""
    if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
        raise ValueError(f"invalid model id {model_id!r}: use [a-z0-9][a-z0-9_-]{{0,63}}")
    return model_id


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
ModelId = Annotated[str, AfterValidator(check_model_id)]


class DataSpan(BaseModel):
    """The data a model was trained on."""

    model_config = ConfigDict(extra="forbid")
    start: UtcDatetime
    end: UtcDatetime
    series: list[str]
    rows: int = Field(ge=0)
    synthetic: bool = False
    series_end: dict[str, UtcDatetime] | None = None  # per series, its last trained step (None: saved before it)

    def trained_until(self, series: str) -> datetime | None:
        """The last step of `series` the model trained on (None: a series it never saw)."""
        if series not in self.series:
            return None
        return self.series_end.get(series) if self.series_end is not None else self.end

    @model_validator(mode="after")
    def check_order(self) -> DataSpan:
        if self.end < self.start:
            raise ValueError("data span end is before start")
        return self


class ModelMetadata(BaseModel):
    """Contents of ``metadata.json``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model_id: ModelId
    version: int = Field(ge=1)
    model_type: Literal["lstm", "lightgbm"]
    created_at: UtcDatetime
    data_span: DataSpan | None = None
    feature_spec: dict[str, Any] = {}
    feature_spec_hash: str = ""
    config: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}

    @property
    def trained_on_synthetic_data(self) -> bool:
        """Whether the version learned from generated data (its data span or its training record says so)."""
        if self.data_span is not None and self.data_span.synthetic:
            return True
        return bool(self.training.get("synthetic_data", False))


class ModelNotFoundError(LookupError):
    """No usable model for this id (and version); the message says which and why."""

    def __init__(self, model_id: str, version: int | None = None, reason: str = "not found") -> None:
        self.model_id, self.version, self.reason = model_id, version, reason
        what = f"model {model_id!r}" + (f" version {version}" if version is not None else "")
        super().__init__(f"{what}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep pickling (e.g. across Ray workers) intact
        return type(self), (self.model_id, self.version, self.reason)


class ModelUnreadable(ModelNotFoundError):
    """A version whose metadata cannot be read just now (a storage error other than its absence): not corrupt."""


class NoActiveVersion(ModelNotFoundError):
    """The model has versions, but none is active: each was registered without activation (its reason names no
    path, so the API may show it)."""

    def __init__(self, model_id: str, version: int | None = None,
                 reason: str = "no version is active (each was registered without activation)") -> None:
        super().__init__(model_id, version, reason)
