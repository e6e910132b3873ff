"""Versioned model registry on the local file system (``MODEL_PATH``, default ``trained_models/``).

Layout: ``<root>/<model_id>/<version>/`` holds the weights, fitted scalers and ``metadata.json``;
``<root>/<model_id>/ACTIVE`` names the served version (without it, the latest version is served). A version folder
appears only by renaming a complete, fsynced staging folder, so readers never see a half-written model.

Changes of ACTIVE happen under an exclusive ``flock`` on ``<root>/<model_id>/.activation`` (waited for up to
`GUARD_TIMEOUT_S`, then RegistryBusy): `promote` activates a
version only while the version it was compared with is still the served one, and publishing a version without
activating it first pins ACTIVE to the version served until then, so an inactive version never becomes the served
one by being the latest. ``ACTIVE.history`` lists the versions ACTIVE pointed at before (the newest last) and
``PINNED`` the versions replicas serve by number: `prune` keeps the newest of the former, the recently pinned, the
served version and the newest versions, and deletes the rest. ``ISSUED`` holds the highest version number given: a
number is never given twice, even after its folder was deleted (replicas, pins and online calibration know a
version by its number), unless it could not be noted (logged) or the publish was killed right after the version's
folder appeared.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from core.atomic_files import DIR_MODE, atomic_write_json, atomic_write_text, fsync_dir, to_jsonable
from core.file_lock import open_guard, take_flock
from core.registry_metadata import (
    MODEL_ID_RE,
    DataSpan,
    ModelMetadata,
    ModelNotFoundError,
    ModelUnreadable,
    NoActiveVersion,
    check_model_id,
)

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
ACTIVE_FILE = "ACTIVE"
NONE_ACTIVE = "none"  # the ACTIVE pointer of a model whose versions were all registered without activation
STAGING_PREFIX = ".staging-"
ACTIVATION_GUARD = ".activation"
ISSUED_FILE = "ISSUED"  # the highest version number ever given: never given again, even after its folder is gone
HISTORY_FILE = "ACTIVE.history"
PINS_FILE = "PINNED"
PIN_TTL_S = 86400
"""How long a `pin` mark keeps a version from being pruned; replicas renew theirs hourly."""
GUARD_TIMEOUT_S = 30.0
"""How long a change of ACTIVE, a pin or a prune waits for another holder of the activation guard (held for a few
file writes): a holder stopped while it held it (suspended, on a hung network volume) fails the caller with
RegistryBusy, never stalls it for good."""
_HISTORY_LINES = 100


def _is_number(text: str) -> bool:
    """ASCII digits only: `int()` refuses what `str.isdigit` takes besides them ("²")."""
    return text.isascii() and text.isdigit()

_REF_RE = re.compile(r"([^/:]+)(?:[/:](\d+))?")


class ActivationFailed(OSError):
    """`publish` registered the version `metadata` names, but could not activate it (the OSError is chained)."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        super().__init__(f"{metadata.model_id} version {metadata.version} is registered, but its activation could "
                         "not be written")

    def __reduce__(self) -> tuple[Any, ...]:  # keep pickling (e.g. across Ray workers) intact
        return type(self), (self.metadata,)


class ActivePointerUnreadable(OSError):
    """A model's ACTIVE pointer cannot be read just now (a storage error): which version is served is not known, so
    nothing is served in its place."""


class RegistryBusy(OSError):
    """Another process held a model's activation guard for longer than the registry waits (`GUARD_TIMEOUT_S`)."""


class ModelRegistry:
    """Publish, list, activate and load model versions under ``root``."""

    def __init__(self, root: str | Path, *, guard_timeout_s: float = GUARD_TIMEOUT_S) -> None:
        self.root = Path(root)
        self.guard_timeout_s = guard_timeout_s

    def _dir(self, model_id: str) -> Path:
        return self.root / check_model_id(model_id)

    def _int_dirs(self, model_id: str) -> list[int]:
        model_dir = self._dir(model_id)
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if _is_number(p.name) and p.is_dir())

    def _issued(self, model_id: str) -> int:
        """The highest version number given so far (0: none noted, or a file that holds no number); a storage error
        reading it is raised (a publish then fails rather than risk giving a number again)."""
        try:
            text = (self._dir(model_id) / ISSUED_FILE).read_text(encoding="ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return 0
        return int(text) if _is_number(text) else 0

    def _note_issued(self, model_id: str, version: int) -> None:
        """Raise ISSUED to `version` (under the activation guard: publishes racing never lower it). A failed write
        is logged: the version is registered all the same."""
        try:
            with self._activation_guard(model_id):
                if version > self._issued(model_id):
                    atomic_write_text(self._dir(model_id) / ISSUED_FILE, f"{version}\n")
        except OSError as exc:
            logger.warning("%s version %d: the highest number given could not be noted: %s", model_id, version, exc)

    def _load(self, model_id: str, version: int) -> tuple[Path, ModelMetadata]:
        vdir = self._dir(model_id) / str(version)
        meta_path = vdir / METADATA_FILE
        if not meta_path.is_file():
            why = f"incomplete (no {METADATA_FILE})" if vdir.is_dir() else f"not found under {self.root}"
            raise ModelNotFoundError(model_id, version, why)
        try:
            raw = meta_path.read_bytes()
        except FileNotFoundError as exc:  # pruned meanwhile
            raise ModelNotFoundError(model_id, version, f"not found under {self.root}") from exc
        except OSError as exc:
            raise ModelUnreadable(model_id, version, f"{meta_path} cannot be read: {exc}") from exc
        try:
            meta = ModelMetadata.model_validate_json(raw)
        except ValueError as exc:
            raise ModelNotFoundError(model_id, version, f"corrupt {meta_path}: {exc}") from exc
        if (meta.model_id, meta.version) != (model_id, version):
            why = f"{meta_path} describes {meta.model_id}/{meta.version}"
            raise ModelNotFoundError(model_id, version, why)
        return vdir, meta

    def model_ids(self) -> list[str]:
        """Ids with at least one complete version, sorted (one whose versions cannot be read just now counts)."""
        return [i for i in self.model_folders() if self._has_versions(i)]

    def model_folders(self) -> list[str]:
        """Ids with a folder, sorted, whether or not a complete version is in it (nothing is parsed: for a caller
        that reads each model's versions anyway)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and MODEL_ID_RE.fullmatch(p.name))

    def _has_versions(self, model_id: str) -> bool:
        try:
            return bool(self.versions(model_id))
        except ModelUnreadable:
            return True

    def versions(self, model_id: str) -> list[int]:
        """Complete versions, ascending; corrupt ones are skipped with a warning."""
        return [metadata.version for metadata in self.version_metadata(model_id)]

    def version_metadata(self, model_id: str) -> list[ModelMetadata]:
        """The metadata of every complete version, ascending, each read once; corrupt ones are skipped with a
        warning, and one pruned meanwhile quietly. ModelUnreadable when one cannot be read just now: a passing
        storage error is never taken for its absence (the latest version would be served, or pinned, in its place)."""
        found = []
        for v in self._int_dirs(model_id):
            if not (self._dir(model_id) / str(v) / METADATA_FILE).is_file():
                continue
            try:
                found.append(self._load(model_id, v)[1])
            except ModelUnreadable:
                raise
            except ModelNotFoundError as exc:
                if (self._dir(model_id) / str(v)).is_dir():
                    logger.warning("skipping %s", exc)
        return found

    def active_version(self, model_id: str) -> int | None:
        """Version named by the ACTIVE pointer, or None when it is missing, corrupt, dangling or says none. Raises
        ActivePointerUnreadable when the pointer cannot be read (a passing storage error is never taken for "no
        pointer", which would serve the latest version)."""
        return self._read_pointer(model_id)[0]

    def _read_pointer(self, model_id: str) -> tuple[int | None, bool]:
        """From one read of ACTIVE: the active version (None: none named), and whether it says none is active (all
        versions registered without activation: none is served)."""
        pointer = self._dir(model_id) / ACTIVE_FILE
        try:
            text = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None, False
        except OSError as exc:
            raise ActivePointerUnreadable(f"the ACTIVE pointer of {model_id} cannot be read: "
                                          f"{exc.strerror or type(exc).__name__}") from exc
        except UnicodeDecodeError:
            text = "(not UTF-8 text)"
        if text == NONE_ACTIVE:
            return None, True
        if not _is_number(text) or not self._names_a_version(model_id, text):
            logger.warning("ACTIVE pointer %s is bad (%r); using latest version", pointer, text)
            return None, False
        return int(text), False

    def _names_a_version(self, model_id: str, version: str) -> bool:
        """Whether the version the pointer names is there; ActivePointerUnreadable when that cannot be told (a
        storage error other than its absence), never taken for a bad pointer, which would serve and pin the latest
        version in its place."""
        try:
            return stat.S_ISREG(os.stat(self._dir(model_id) / version / METADATA_FILE).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise ActivePointerUnreadable(f"the version the ACTIVE pointer of {model_id} names cannot be read: "
                                          f"{exc.strerror or type(exc).__name__}") from exc

    def served_version(self, model_id: str, versions: list[int] | None = None) -> int | None:
        """The version the service loads: the active one, else the latest (unless the pointer says none is active);
        None when the model has no version to serve. `versions`: the complete versions when the caller has just read
        them (they are not read again)."""
        active, none_active = self._read_pointer(model_id)
        if active is not None or none_active:
            return active
        available = self.versions(model_id) if versions is None else versions
        return available[-1] if available else None

    def get(self, model_id: str, version: int | None = None) -> tuple[Path, ModelMetadata]:
        """Folder and metadata of ``version``; None means the active version, else the latest (unless the pointer
        says none is active: ModelNotFoundError)."""
        if version is None:
            version, none_active = self._read_pointer(model_id)
            if none_active:
                raise NoActiveVersion(model_id)
            if version is None:
                available = self.versions(model_id)
                if not available:
                    raise ModelNotFoundError(model_id, None, f"no versions under {self.root}")
                version = available[-1]
        elif isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"version must be an int, got {version!r}")
        return self._load(model_id, version)

    def feature_spec(self, model_id: str) -> dict[str, Any]:
        """The feature spec of the version serving now (the active one, else the latest); empty when the model has
        no version, or its metadata is corrupt (ModelUnreadable when it cannot be read just now)."""
        try:
            return dict(self.get(model_id)[1].feature_spec)
        except ModelUnreadable:  # a passing storage error is no "no version": the caller fails, not another shape
            raise
        except ModelNotFoundError:
            return {}

    def resolve(self, ref: str) -> tuple[Path, ModelMetadata]:
        """Resolve ``"id"`` (active), ``"id/3"`` or ``"id:3"``."""
        match = _REF_RE.fullmatch(ref.strip())
        if match is None:
            raise ValueError(f"invalid model reference {ref!r}: use 'id', 'id/3' or 'id:3'")
        model_id, version = match.groups()
        return self.get(check_model_id(model_id), int(version) if version else None)

    def activate(self, model_id: str, version: int) -> None:
        """Point ACTIVE at an existing, readable version."""
        self._load(model_id, version)
        with self._activation_guard(model_id):
            self._write_active(model_id, version)

    def promote(self, model_id: str, version: int, *, over: int | None) -> bool:
        """Activate `version` only if the served version is still `over`, the one it was compared with (None: no
        version was served); False, and nothing changed, when another version has been activated meanwhile."""
        self._load(model_id, version)
        with self._activation_guard(model_id):
            served = self.active_version(model_id)
            if served != over:
                logger.warning("%s version %d not activated: version %s is served now, not %s, the one it was "
                               "compared with", model_id, version, served, over)
                return False
            self._write_active(model_id, version)
            return True

    def _write_active(self, model_id: str, version: int) -> None:
        previous = self.active_version(model_id)
        if previous is not None and previous != version:
            history = [*self.former_versions(model_id), previous][-_HISTORY_LINES:]
            atomic_write_text(self._dir(model_id) / HISTORY_FILE, "".join(f"{v}\n" for v in history))
        atomic_write_text(self._dir(model_id) / ACTIVE_FILE, f"{version}\n")
        logger.info("activated %s version %d", model_id, version)

    def former_versions(self, model_id: str) -> list[int]:
        """The versions ACTIVE pointed at before the current one, the most recent last (unreadable lines skipped)."""
        try:
            lines = (self._dir(model_id) / HISTORY_FILE).read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return []
        return [int(line) for line in lines if _is_number(line)]

    def fallback_versions(self, model_id: str) -> list[int]:
        """What a replica tries, in order, when the served version cannot be loaded: the versions ACTIVE pointed at
        before, the most recent first; the first that loads is served."""
        return list(reversed(self.former_versions(model_id)))

    def pin(self, model_id: str, version: int, now: datetime | None = None) -> None:
        """Mark `version` as served by number (a replica's `model_version`): `prune` keeps it while marked within
        `PIN_TTL_S`, so a replica pinned to it can still start. Replicas renew the mark while they stay pinned."""
        self._load(model_id, version)
        with self._activation_guard(model_id):
            pins = self._pins(model_id)
            pins[str(version)] = (now or datetime.now(UTC)).isoformat()
            atomic_write_text(self._dir(model_id) / PINS_FILE, json.dumps(pins, sort_keys=True))

    def pinned_versions(self, model_id: str, now: datetime | None = None) -> set[int]:
        """The versions marked by `pin` within the last `PIN_TTL_S`."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=PIN_TTL_S)
        found = set()
        for version, stamp in self._pins(model_id).items():
            try:
                if _is_number(version) and datetime.fromisoformat(stamp) >= cutoff:
                    found.add(int(version))
            except (TypeError, ValueError):
                continue
        return found

    def _pins(self, model_id: str) -> dict[str, str]:
        try:
            pins = json.loads((self._dir(model_id) / PINS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            logger.warning("%s of %s is unreadable: starting it afresh", PINS_FILE, model_id)
            return {}
        return pins if isinstance(pins, dict) else {}

    def prune(self, model_id: str, keep: int) -> list[int]:
        """Delete the versions beyond the newest `keep`, never the served one, the `keep` most recently served
        before it (the rollback targets) nor a pinned one (`pin`); the versions deleted. A version folder is
        renamed out of sight under the activation lock and deleted after it, so a reader sees it whole or not at
        all and activations wait only for the renames."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        asides = []
        with self._activation_guard(model_id):
            versions = self.versions(model_id)
            served = self.active_version(model_id) or (versions[-1] if versions else None)
            former = list(dict.fromkeys(reversed(self.former_versions(model_id))))[:keep]
            kept = {*versions[-keep:], served, *former, *self.pinned_versions(model_id)}
            doomed = [v for v in versions if v not in kept]
            for version in doomed:
                aside = self._dir(model_id) / f"{STAGING_PREFIX}pruned-{version}-{uuid.uuid4().hex}"
                os.rename(self._dir(model_id) / str(version), aside)
                asides.append(aside)
        for aside in asides:  # left behind if this fails: publish's staging clean-up removes it after an hour
            shutil.rmtree(aside, ignore_errors=True)
        if doomed:
            logger.info("pruned %s versions %s (kept the newest %d, the served and the formerly served)", model_id,
                        doomed, keep)
        return doomed

    def _pin_served(self, model_id: str, *, may_activate: bool) -> None:
        """Without an ACTIVE pointer, point it at the latest version (the one served now), before a version that is
        not to be activated appears and would be served for being the latest; with no version yet, and one that is
        never to be activated (`may_activate` False), say that none is active (a version registered without
        activation is not served for being the only one). A first version whose activation may still come, and never
        does (a process killed before it), is served as the latest."""
        with self._activation_guard(model_id):
            if self._read_pointer(model_id) == (None, False):  # no pointer, or a bad one (OSError: unreadable)
                available = self.versions(model_id)
                if available:
                    self._write_active(model_id, available[-1])
                elif not may_activate:
                    atomic_write_text(self._dir(model_id) / ACTIVE_FILE, f"{NONE_ACTIVE}\n")

    @contextmanager
    def _activation_guard(self, model_id: str) -> Iterator[None]:
        model_dir = self._dir(model_id)
        model_dir.mkdir(parents=True, exist_ok=True)
        descriptor = open_guard(model_dir / ACTIVATION_GUARD)
        try:
            if not take_flock(descriptor, self.guard_timeout_s):
                raise RegistryBusy(errno.EAGAIN, f"another process has held the activation guard of {model_id!r} "
                                                 f"for over {self.guard_timeout_s:g} s; try again")
            yield
        finally:
            os.close(descriptor)  # closing releases the flock

    def publish(
        self,
        model_id: str,
        source_dir: Path,
        *,
        model_type: Literal["lstm", "lightgbm"],
        data_span: DataSpan | dict[str, Any] | None = None,
        feature_spec: dict[str, Any] | None = None,
        feature_spec_hash: str = "",
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        activate: bool = True,
        may_activate: bool | None = None,
    ) -> ModelMetadata:
        """Copy ``source_dir`` into a new version folder atomically and return its metadata (first removing the
        model's staging folders that a publish killed over an hour ago left behind). Once the folder is renamed into
        place the version is registered: an activation that cannot be written then raises ActivationFailed, carrying
        the version's metadata. `may_activate` (default: `activate`): whether the caller may activate the version
        after publishing it (a retraining that compares it first); only one never to be activated leaves a model
        that had no version serving none."""
        source_dir = Path(source_dir)
        if not source_dir.is_dir() or not any(source_dir.iterdir()):
            raise ValueError(f"source dir {source_dir} is missing or empty")
        meta = ModelMetadata(
            model_id=model_id, version=1, model_type=model_type, created_at=datetime.now(UTC),
            data_span=data_span, feature_spec=to_jsonable(feature_spec or {}),
            feature_spec_hash=feature_spec_hash, config=to_jsonable(config or {}),
            metrics=to_jsonable(metrics or {}), training=to_jsonable(training or {}),
        )  # fmt: skip
        model_dir = self._dir(model_id)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.cleanup_staging(model_id)
        staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        try:
            shutil.copytree(source_dir, staging)
            for folder in (staging, *(path for path in staging.rglob("*") if path.is_dir())):
                os.chmod(folder, DIR_MODE)  # not a temporary folder's 0700: the service may run as another user
            if (staging / METADATA_FILE).exists():
                logger.warning("%s in %s is replaced by the registry's own", METADATA_FILE, source_dir)
            for path in staging.rglob("*"):
                if path.is_file():
                    with open(path, "rb") as fh:
                        os.fsync(fh.fileno())
            # even when activating: that may never come (killed)
            self._pin_served(model_id, may_activate=activate if may_activate is None else may_activate)
            version = max([*self._int_dirs(model_id), self._issued(model_id)], default=0) + 1
            for _ in range(1000):
                meta = meta.model_copy(update={"version": version})
                atomic_write_json(staging / METADATA_FILE, meta)
                target = model_dir / str(version)
                try:
                    if target.exists():  # rename onto an empty dir would succeed on POSIX
                        raise FileExistsError(errno.EEXIST, "exists", str(target))
                    os.rename(staging, target)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    version = max([version, *self._int_dirs(model_id)]) + 1
            else:
                raise RuntimeError(f"could not claim a version folder for {model_id!r}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._note_issued(model_id, version)
        fsync_dir(model_dir)
        logger.info("published %s version %d", model_id, version)
        if activate:
            try:
                self.activate(model_id, version)
            except OSError as exc:
                raise ActivationFailed(meta) from exc
        return meta

    def cleanup_staging(self, model_id: str | None = None, *, max_age_s: float = 3600.0) -> int:
        """Remove ``.staging-*`` folders older than ``max_age_s``; return how many were removed."""
        if not self.root.is_dir():
            return 0
        pattern = f"{check_model_id(model_id) if model_id else '*'}/{STAGING_PREFIX}*"
        cutoff, removed = time.time() - max_age_s, 0
        for path in self.root.glob(pattern):
            try:
                stale = path.is_dir() and path.stat().st_mtime < cutoff
            except FileNotFoundError:  # removed meanwhile (another cleanup, a prune of its model)
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        if removed:
            logger.info("removed %d stale staging folder(s) under %s", removed, self.root)
        return removed
