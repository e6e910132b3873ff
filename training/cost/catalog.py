"""The price catalog (``configs/prices.yaml``), a job's expected power and list price, and generated past jobs.

Expected average IT power of a job (watts), from the catalog's power profile::

    P = node_base_watts * node share + cpu_cores * per_core_watts * u_cpu(workload)
        + gpu_count * tdp_watts(gpu_type) * u_accel(workload)
    node share = max(cpu_cores / node_cores, gpu_count / node_accelerators)

u_cpu and u_accel are the typical utilizations of the workload type (``power.utilization``; the
``default`` entry for unknown or missing types). The node share splits a server's idle draw between the jobs that
share it, and counts it once per node for a job that spans several (above 1); a catalog that names neither node size
(one saved with a model before the shares) charges every job the whole base.

List price (the catalog's deterministic price; spot factor = 1 - spot.discount for spot jobs, else 1)::

    compute = (cpu_cores * vcpu_hour + memory_gb * memory_gb_hour) * hours * spot factor
    gpu     = gpu_count * hour(gpu_type) * hours * spot factor
    storage = storage_gb * gb_month / hours_per_month * hours
    network = network_gb * egress_gb
    energy  = P * hours / 1000 * tariff_kwh * pue
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.settings import format_errors, load_yaml
from training.cost.jobs import JOB_COLUMNS, NONE, Jobs, job_columns, numbers
from training.cost.schema import COMPONENTS, CostQuery

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGED_CATALOG_PATH = Path(__file__).resolve().with_name("prices.yaml")  # a copy of configs/prices.yaml
logger = logging.getLogger(__name__)
RECORD_COLUMNS = (*JOB_COLUMNS, "avg_power_watts", "cost", *COMPONENTS)
WORKLOADS = ("training", "inference", "batch", "idle")
SAVED = "saved"  # validation context key: a catalog read back from a saved model (see the validators that read it)


class CatalogError(ValueError):
    """The price catalog cannot be read or is invalid; the message names the file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ComputePrices(_Section):
    vcpu_hour: float = Field(ge=0)
    memory_gb_hour: float = Field(ge=0)


class GpuType(_Section):
    hour: float = Field(ge=0)
    tdp_watts: float = Field(ge=0)


class GpuPrices(_Section):
    default_type: str
    types: dict[str, GpuType] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_known(self, info: ValidationInfo) -> GpuPrices:
        """The default type is one of the types, and no two differ only in case. A saved model's catalog (`SAVED`)
        from before that check keeps its twins: a named type resolves to the first spelling, the default to its
        own, as they did when it was trained."""
        if self.default_type not in self.types:
            raise ValueError(f"default_type {self.default_type!r} is not one of types ({', '.join(self.types)})")
        if (info.context or {}).get(SAVED):
            return self
        spellings: dict[str, str] = {}
        for name in self.types:  # names match case-insensitively: a second spelling could never be priced
            if (first := spellings.setdefault(name.lower(), name)) != name:
                raise ValueError(f"types {first!r} and {name!r} differ only in case")
        return self


class StoragePrices(_Section):
    gb_month: float = Field(ge=0)
    hours_per_month: float = Field(730.0, gt=0)


class NetworkPrices(_Section):
    egress_gb: float = Field(ge=0)


class EnergyPrices(_Section):
    tariff_kwh: float = Field(ge=0)
    pue: float = Field(1.4, ge=1)


class SpotPrices(_Section):
    discount: float = Field(ge=0, lt=1)


class Utilization(_Section):
    accelerator: float = Field(ge=0, le=1)
    cpu: float = Field(ge=0, le=1)


class PowerProfile(_Section):
    node_base_watts: float = Field(ge=0)
    node_cores: int | None = Field(None, ge=1)  # a node's size, for a job's share of its base (None: not split)
    node_accelerators: int | None = Field(None, ge=1)
    per_core_watts: float = Field(ge=0)
    utilization: dict[str, Utilization]

    def base_watts(self, cores: np.ndarray, accelerators: np.ndarray) -> np.ndarray:
        """Each job's part of `node_base_watts`: its node share (module docstring), the whole base where the catalog
        names no node size. Never less for more cores or accelerators."""
        if self.node_cores is None or self.node_accelerators is None:
            return np.full(len(cores), self.node_base_watts)
        share = np.maximum(np.asarray(cores, float) / self.node_cores,
                           np.asarray(accelerators, float) / self.node_accelerators)
        return self.node_base_watts * share

    @field_validator("utilization")
    @classmethod
    def _lower_case(cls, utilization: dict[str, Utilization], info: ValidationInfo) -> dict[str, Utilization]:
        """Workload types are looked up in lower case: a key written otherwise would never match. A saved model's
        catalog (`SAVED`) from before such keys were lowered keeps only those lookups reached (already in lower
        case), so its jobs are priced as they were when it was trained."""
        if (info.context or {}).get(SAVED):
            return {key: value for key, value in utilization.items() if key == key.strip().lower()}
        keys = [key.strip().lower() for key in utilization]
        if len(set(keys)) < len(keys):
            raise ValueError("workload types that differ only in case or spaces: " + ", ".join(utilization))
        return dict(zip(keys, utilization.values(), strict=True))

    @model_validator(mode="after")
    def _has_default(self) -> PowerProfile:
        if "default" not in self.utilization:
            raise ValueError("utilization needs a 'default' entry for unknown workload types")
        if (self.node_cores is None) != (self.node_accelerators is None):  # one alone: a job without it, no base
            raise ValueError("node_cores and node_accelerators go together (or neither: the whole base per job)")
        return self


class PriceCatalog(_Section):
    """Prices and the power profile; see ``configs/prices.yaml`` for the meaning and source of each value."""

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    compute: ComputePrices
    gpu: GpuPrices
    storage: StoragePrices
    network: NetworkPrices
    energy: EnergyPrices
    spot: SpotPrices
    power: PowerProfile

    def gpu_type_name(self, name: str) -> str | None:
        """The catalog's spelling of ``name`` (case-insensitive), or None when it is unknown."""
        wanted = name.strip().lower()
        return next((known for known in self.gpu.types if known.lower() == wanted), None)

    def job_gpu_type(self, count: float, name: object) -> str:
        """A job's gpu_type in the catalog's spelling: "none" without GPUs, the default type when not named (an
        unknown name is kept as given: `price_components` refuses it)."""
        if count <= 0:
            return NONE
        if not isinstance(name, str) or not name.strip():
            return self.gpu.default_type
        return self.gpu_type_name(name) or name

    def utilization(self, workload: object) -> Utilization:
        """Typical utilization of ``workload``; the ``default`` entry for unknown or missing types."""
        key = workload.strip().lower() if isinstance(workload, str) else "default"
        return self.power.utilization.get(key, self.power.utilization["default"])


def default_catalog_path(repo_root: Path = REPO_ROOT) -> Path:
    """``configs/prices.yaml`` of a checkout (the image's included), the documented file to edit; else the copy the
    package ships (a non-editable ``pip install .``)."""
    checkout = repo_root / "configs" / "prices.yaml"
    return checkout if checkout.is_file() else PACKAGED_CATALOG_PATH


DEFAULT_CATALOG_PATH = default_catalog_path()


def load_catalog(path: str | Path | None = None) -> PriceCatalog:
    """Read and validate a price catalog (default ``DEFAULT_CATALOG_PATH``: ``configs/prices.yaml``)."""
    path = Path(path) if path is not None else DEFAULT_CATALOG_PATH
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read price catalog: {' '.join(str(exc).split())}") from exc
    try:
        return PriceCatalog.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise CatalogError(format_errors(str(path), exc)) from None


class _FileCache:
    """The default catalog, read again when the file changes (its mtime or size): a GPU type added to
    ``configs/prices.yaml`` is known to a running service's retrainings (and the jobs they generate) without a
    restart; requests are priced with the active cost model's own catalog. An edit that does not validate keeps the
    last good catalog (and says so once)."""

    def __init__(self, path: Path):
        self.path, self._lock = path, threading.Lock()
        self._key: tuple[int, int] | None = None
        self._catalog: PriceCatalog | None = None

    def get(self) -> PriceCatalog:
        try:
            stat = self.path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None
        with self._lock:
            if self._catalog is not None and key == self._key:
                return self._catalog
            try:
                catalog = load_catalog(self.path)
            except CatalogError as exc:
                if self._catalog is None:
                    raise
                logger.warning("price catalog not reloaded, the last good one stays: %s", exc)
                self._key = key
                return self._catalog
            self._key, self._catalog = key, catalog
            return catalog


_DEFAULT = _FileCache(DEFAULT_CATALOG_PATH)


def default_catalog() -> PriceCatalog:
    """``configs/prices.yaml``, read again when it changed."""
    return _DEFAULT.get()


class UnknownGpuType(ValueError):
    """A job names a GPU type that the catalog a model was trained with does not have."""

    def __init__(self, name: object, catalog: PriceCatalog):
        super().__init__(f"gpu_type {name!r} is not in the price catalog ({', '.join(catalog.gpu.types)})")

    def __reduce__(self):  # survives pickling across Ray (a batch item's error), its message kept
        return (_unknown_gpu_type, (str(self),))


def _unknown_gpu_type(message: str) -> UnknownGpuType:
    error = UnknownGpuType.__new__(UnknownGpuType)
    ValueError.__init__(error, message)
    return error


def _gpu_specs(frame: Jobs, catalog: PriceCatalog) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (GPU price per hour, TDP watts); the default type where GPUs are asked for without a type."""
    counts = numbers(frame, "gpu_count")
    price, tdp = np.zeros(len(counts)), np.zeros(len(counts))
    for i, (count, name) in enumerate(zip(counts, frame["gpu_type"], strict=True)):
        if count <= 0:
            continue
        known = catalog.gpu_type_name(name) if isinstance(name, str) and name.strip() else catalog.gpu.default_type
        if known is None:
            raise UnknownGpuType(name, catalog)
        price[i], tdp[i] = catalog.gpu.types[known].hour, catalog.gpu.types[known].tdp_watts
    return price, tdp


def expected_power(frame: Jobs, catalog: PriceCatalog) -> np.ndarray:
    """Expected average IT power (W) of every job in ``frame`` (the formula in the module docstring)."""
    util = [catalog.utilization(w) for w in frame["workload_type"]]
    u_cpu, u_acc = np.array([u.cpu for u in util]), np.array([u.accelerator for u in util])
    _, tdp = _gpu_specs(frame, catalog)
    cores, gpus = numbers(frame, "cpu_cores"), numbers(frame, "gpu_count")
    return catalog.power.base_watts(cores, gpus) + cores * catalog.power.per_core_watts * u_cpu + gpus * tdp * u_acc


def price_components(frame: Jobs, catalog: PriceCatalog, power: np.ndarray | None = None) -> np.ndarray:
    """List price of every job by component: one row per job, one column per ``COMPONENTS`` entry; ``power``
    (W) defaults to ``expected_power``."""
    power = expected_power(frame, catalog) if power is None else np.asarray(power, float)
    hours = numbers(frame, "duration_hours")
    spot = np.where(np.asarray(frame["spot_instance"], dtype=bool), 1.0 - catalog.spot.discount, 1.0)
    gpu_hour, _ = _gpu_specs(frame, catalog)
    compute = numbers(frame, "cpu_cores") * catalog.compute.vcpu_hour
    compute = compute + numbers(frame, "memory_gb") * catalog.compute.memory_gb_hour
    by_name = {
        "compute": compute * hours * spot,
        "gpu": numbers(frame, "gpu_count") * gpu_hour * hours * spot,
        "storage": numbers(frame, "storage_gb") * catalog.storage.gb_month / catalog.storage.hours_per_month * hours,
        "network": numbers(frame, "network_gb") * catalog.network.egress_gb,
        "energy": power * hours / 1000.0 * catalog.energy.tariff_kwh * catalog.energy.pue,
    }
    return np.column_stack([by_name[name] for name in COMPONENTS])


def price_frame(frame: pd.DataFrame, catalog: PriceCatalog, power: np.ndarray | None = None) -> pd.DataFrame:
    """`price_components` as a DataFrame with the ``COMPONENTS`` as columns and ``frame``'s index."""
    return pd.DataFrame(price_components(frame, catalog, power), columns=list(COMPONENTS), index=frame.index)


def list_price(query: CostQuery, catalog: PriceCatalog | None = None,
               expected_power_watts: float | None = None) -> dict[str, float]:
    """The catalog's price of one job by component (``COMPONENTS``); energy at the given or expected power."""
    power = None if expected_power_watts is None else np.array([expected_power_watts], float)
    row = price_components(job_columns([query]), catalog or default_catalog(), power)[0]
    return {name: float(row[j]) for j, name in enumerate(COMPONENTS)}


def generate_job_records(n: int, seed: int = 0, catalog: PriceCatalog | None = None) -> pd.DataFrame:
    """``n`` invented but plausible past jobs (``RECORD_COLUMNS``) priced from ``catalog`` with realistic noise.

    Assumptions: GPU jobs use 1, 2, 4 or 8 accelerators with 4-16 cores and 2-8 GB RAM per core;
    durations are log-normal (median 0.5 h idle .. 6 h training, one minute to three weeks);
    measured power = expected power x log-normal noise (sd 12 %); bills deviate from the list price
    by sustained-use/commitment discounts (0-10 % off compute and GPU), preemption of spot runs (more
    likely the longer they run; lost work is re-run: +5-30 % hours and energy), and storage/network
    jitter (snapshots, retries: sd 10 % / 15 %).
    """
    catalog, rng = catalog or default_catalog(), np.random.default_rng(seed)
    gpus = rng.choice([0, 1, 2, 4, 8], n, p=[0.35, 0.25, 0.12, 0.13, 0.15])
    has_gpu = gpus > 0
    cpu_cores = np.where(has_gpu, gpus * rng.choice([4, 8, 12, 16], n),
                         rng.choice([1, 2, 4, 8, 16, 32, 64], n, p=[0.1, 0.2, 0.25, 0.2, 0.12, 0.08, 0.05]))
    workload = np.where(has_gpu, rng.choice(WORKLOADS, n, p=[0.5, 0.35, 0.1, 0.05]),
                        rng.choice(WORKLOADS, n, p=[0.15, 0.25, 0.5, 0.1]))
    median_hours = pd.Series(workload).map({"training": 6.0, "inference": 3.0, "batch": 1.0, "idle": 0.5})
    hours = np.clip(median_hours.to_numpy() * rng.lognormal(0.0, 1.2, n), 1 / 60, 21 * 24).round(4)
    frame = pd.DataFrame({
        "cpu_cores": cpu_cores.astype(float),
        "memory_gb": (cpu_cores * rng.choice([2, 4, 8], n)).astype(float),
        "gpu_count": gpus,
        "gpu_type": np.where(has_gpu, rng.choice(list(catalog.gpu.types), n), None),
        "storage_gb": np.where(rng.random(n) < 0.2, 0.0, rng.lognormal(np.log(50.0 * (1 + gpus)), 0.8).round()),
        "network_gb": np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(np.log(2.0), 1.5, n).round(3)),
        "duration_hours": hours,
        "spot_instance": rng.random(n) < np.where(np.isin(workload, ["training", "batch"]), 0.35, 0.15),
        "workload_type": workload,
    })
    frame["avg_power_watts"] = (expected_power(frame, catalog) * rng.lognormal(0.0, 0.12, n)).round(1)
    listed = price_frame(frame, catalog)
    discount = rng.uniform(0.90, 1.0, n)
    preempted = frame["spot_instance"].to_numpy() & (rng.random(n) < 1.0 - np.exp(-hours / 24.0))
    rerun = np.where(preempted, 1.0 + rng.uniform(0.05, 0.30, n), 1.0)
    frame["compute"] = listed["compute"] * discount * rerun * rng.lognormal(0.0, 0.03, n)
    frame["gpu"] = listed["gpu"] * discount * rerun * rng.lognormal(0.0, 0.03, n)
    frame["storage"] = listed["storage"] * rng.lognormal(0.0, 0.10, n)
    frame["network"] = listed["network"] * rng.lognormal(0.0, 0.15, n)
    frame["energy"] = (frame["avg_power_watts"] * hours * rerun / 1000.0 * catalog.energy.tariff_kwh
                       * catalog.energy.pue)
    frame["cost"] = frame[list(COMPONENTS)].sum(axis=1)
    return frame[list(RECORD_COLUMNS)]
