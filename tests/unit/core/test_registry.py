"""Unit tests for the file-system model registry."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pickle
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.atomic_files import atomic_write_json, atomic_write_text
from core.registry import ActivationFailed, ActivePointerUnreadable, ModelRegistry, RegistryBusy
from core.registry_metadata import DataSpan, ModelMetadata, ModelNotFoundError, ModelUnreadable
from tests.factories import unreadable


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "scalers").mkdir(parents=True)
    (src / "model.pt").write_bytes(b"\x00weights")
    (src / "scalers" / "x.json").write_text('{"mean": 1.0}')
    return src


@pytest.fixture()
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def _span() -> DataSpan:
    return DataSpan(
        start=datetime(2024, 1, 1, tzinfo=UTC), end=datetime(2024, 1, 8, tzinfo=UTC),
        series=["node-a", "node-b"], rows=2016, synthetic=True,
    )  # fmt: skip


def test_publish_assigns_increasing_versions_and_activates(reg: ModelRegistry, source: Path) -> None:
    assert [reg.publish("power_lstm", source, model_type="lstm").version for _ in range(3)] == [1, 2, 3]
    assert reg.versions("power_lstm") == [1, 2, 3]
    assert reg.active_version("power_lstm") == 3
    assert reg.model_ids() == ["power_lstm"]
    assert (reg.root / "power_lstm" / "ACTIVE").read_text() == "3\n"


def test_a_version_published_from_a_private_folder_is_a_plain_folder_another_user_can_enter(
        reg: ModelRegistry, source: Path) -> None:
    """Regression: a retraining publishes from a TemporaryDirectory (0700), whose mode the copy kept: a service
    running as another user could not read the version."""
    source.chmod(0o700)
    (source / "scalers").chmod(0o700)
    reg.publish("power_lstm", source, model_type="lstm")
    umask = os.umask(0o022)
    os.umask(umask)
    for folder in (reg.root / "power_lstm" / "1", reg.root / "power_lstm" / "1" / "scalers"):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask, folder


def test_files_copied_and_metadata_round_trips(reg: ModelRegistry, source: Path) -> None:
    meta = reg.publish(
        "power_lstm", source, model_type="lstm", data_span=_span(), feature_spec={"lags": [1, 2]},
        feature_spec_hash="abc", config={"hidden": 64}, training={"seed": 7, "use_gpu": False},
        metrics={"mae": np.float32(1.5), "mape": float("nan")},
    )  # fmt: skip
    path, loaded = reg.get("power_lstm", 1)
    assert path == reg.root / "power_lstm" / "1"
    assert (path / "model.pt").read_bytes() == b"\x00weights"
    assert json.loads((path / "scalers" / "x.json").read_text()) == {"mean": 1.0}
    assert loaded == meta
    assert loaded.metrics == {"mae": 1.5, "mape": None}
    assert loaded.data_span == _span() and loaded.created_at.tzinfo is not None
    on_disk = json.loads((path / "metadata.json").read_text())
    assert on_disk["model_id"] == "power_lstm" and on_disk["version"] == 1 and on_disk["model_type"] == "lstm"



def test_feature_spec_of_the_serving_version_or_empty_without_one(reg: ModelRegistry, source: Path) -> None:
    assert reg.feature_spec("power_lstm") == {}
    reg.publish("power_lstm", source, model_type="lstm", feature_spec={"step_s": 60})
    reg.publish("power_lstm", source, model_type="lstm", feature_spec={"step_s": 3600})
    assert reg.feature_spec("power_lstm") == {"step_s": 3600}  # the active (latest published) version
    reg.activate("power_lstm", 1)
    assert reg.feature_spec("power_lstm") == {"step_s": 60}


def test_active_pointer_moves_and_can_point_back(reg: ModelRegistry, source: Path) -> None:
    reg.publish("cost_gbm", source, model_type="lightgbm")
    reg.publish("cost_gbm", source, model_type="lightgbm", activate=False)
    assert reg.active_version("cost_gbm") == 1
    assert reg.get("cost_gbm")[1].version == 1
    reg.activate("cost_gbm", 2)
    assert reg.get("cost_gbm")[1].version == 2
    reg.activate("cost_gbm", 1)
    assert reg.get("cost_gbm")[1].version == 1
    with pytest.raises(ModelNotFoundError, match="cost_gbm.*version 9"):
        reg.activate("cost_gbm", 9)


def test_missing_or_corrupt_pointer_falls_back_to_latest(
    reg: ModelRegistry, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg.publish("power_lstm", source, model_type="lstm")
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    assert reg.active_version("power_lstm") == 1
    (reg.root / "power_lstm" / "ACTIVE").unlink()
    assert reg.active_version("power_lstm") is None
    assert reg.get("power_lstm")[1].version == 2
    for bad in ("", "garbage", "9\n"):  # empty, unparsable, dangling
        caplog.clear()
        (reg.root / "power_lstm" / "ACTIVE").write_text(bad)
        with caplog.at_level(logging.WARNING):
            assert reg.active_version("power_lstm") is None
            assert reg.get("power_lstm")[1].version == 2
        assert "ACTIVE" in caplog.text


def test_an_inactive_version_never_becomes_the_served_one_by_being_the_latest(reg: ModelRegistry,
                                                                              source: Path) -> None:
    """Regression: without an ACTIVE pointer the latest version is served, so a version registered without
    activation (a retraining that did not beat it) displaced the served one at the next replica start."""
    reg.publish("power_lstm", source, model_type="lstm")
    (reg.root / "power_lstm" / "ACTIVE").unlink()  # a registry from before the pointer: the latest is served
    assert reg.active_version("power_lstm") is None and reg.served_version("power_lstm") == 1
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    assert reg.served_version("power_lstm") == 1 and reg.get("power_lstm")[1].version == 1
    assert reg.served_version("cost_gbm") is None


def test_regression_a_first_version_registered_without_activation_is_not_served(reg: ModelRegistry,
                                                                               source: Path) -> None:
    """`train_lstm --no-activate` on a model with no version: it was served for being the only one (a 1-step model
    then set the shape of every later retraining, which refused it)."""
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    assert reg.served_version("power_lstm") is None and reg.versions("power_lstm") == [1]
    with pytest.raises(ModelNotFoundError, match="no version is active"):
        reg.get("power_lstm")
    assert reg.feature_spec("power_lstm") == {}
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    assert reg.served_version("power_lstm") is None
    assert reg.promote("power_lstm", 2, over=None) and reg.get("power_lstm")[1].version == 2


def test_a_first_version_whose_promotion_never_comes_is_served(reg: ModelRegistry, source: Path) -> None:
    """Regression: a retraining publishes before it promotes; on a model with no version yet the publish wrote "none
    active", so a process killed in between (OOM, node loss) left the model serving nothing until the next one."""
    reg.publish("cost_gbm", source, model_type="lightgbm", activate=False, may_activate=True)
    assert reg.served_version("cost_gbm") == 1  # killed here: the latest is served
    assert reg.promote("cost_gbm", 1, over=None) and reg.active_version("cost_gbm") == 1


def test_a_storage_error_on_the_active_version_is_never_taken_for_a_bad_pointer(reg: ModelRegistry, source: Path,
                                                                                 monkeypatch) -> None:
    """One failed stat of the active version's metadata during a publish is a storage error the callers know
    (ActivePointerUnreadable: 503, the attempt failed), never a bad pointer, which would pin the latest version (one
    that had lost its comparison)."""
    reg.publish("power_lstm", source, model_type="lstm")
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    real_stat = os.stat

    def failing(path, *args, **kwargs):
        if str(path).endswith(os.path.join("power_lstm", "1", "metadata.json")):
            raise OSError(errno.EIO, "Input/output error")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing)
    with pytest.raises(ActivePointerUnreadable, match="the version the ACTIVE pointer of power_lstm names cannot be "
                                                      "read: Input/output error"):
        reg.publish("power_lstm", source, model_type="lstm", activate=False)
    monkeypatch.undo()
    assert reg.active_version("power_lstm") == 1 and reg.versions("power_lstm") == [1, 2]


def test_promote_activates_only_while_the_compared_version_is_still_served(reg: ModelRegistry,
                                                                           source: Path) -> None:
    """Regression: a retraining compared with version 1 activated its version 3 after another retraining had
    activated version 2, replacing a version it was never compared with."""
    reg.publish("power_lstm", source, model_type="lstm")
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    assert reg.promote("power_lstm", 2, over=1) and reg.active_version("power_lstm") == 2
    assert not reg.promote("power_lstm", 3, over=1) and reg.active_version("power_lstm") == 2
    assert reg.promote("power_lstm", 3, over=2) and reg.active_version("power_lstm") == 3
    reg.publish("fresh", source, model_type="lstm", activate=False)
    assert reg.promote("fresh", 1, over=None) and reg.active_version("fresh") == 1
    assert not reg.promote("fresh", 1, over=None)  # version 1 is active now, not "none"
    with pytest.raises(ModelNotFoundError):
        reg.promote("power_lstm", 9, over=3)


def test_a_guard_held_by_a_stopped_process_fails_the_caller_instead_of_stalling_it(tmp_path: Path,
                                                                                  source: Path) -> None:
    """Regression: the activation guard was waited for without a limit, so a holder stopped while it held it (a
    suspended process, a hung network volume) stalled every activation, pin and prune of the model for good."""
    reg = ModelRegistry(tmp_path / "models", guard_timeout_s=0.05)
    reg.publish("power_lstm", source, model_type="lstm")
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    holder = os.open(reg.root / "power_lstm" / ".activation", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        for change in (lambda: reg.promote("power_lstm", 2, over=1), lambda: reg.pin("power_lstm", 1),
                       lambda: reg.prune("power_lstm", keep=1)):
            with pytest.raises(RegistryBusy, match="held the activation guard of 'power_lstm'"):
                change()
    finally:
        os.close(holder)
    assert reg.active_version("power_lstm") == 1
    assert reg.promote("power_lstm", 2, over=1) and reg.active_version("power_lstm") == 2


def test_prune_keeps_the_newest_the_served_and_the_formerly_served_versions(reg: ModelRegistry,
                                                                            source: Path) -> None:
    """Regression: every scheduled retraining published a version and none was ever deleted (thousands a year)."""
    reg.publish("power_lstm", source, model_type="lstm")  # 1, then served
    for _ in range(3):
        reg.publish("power_lstm", source, model_type="lstm", activate=False)  # 2-4 lost
    assert reg.publish("power_lstm", source, model_type="lstm").version == 5  # activated: 5 served, 1 before
    for _ in range(4):
        reg.publish("power_lstm", source, model_type="lstm", activate=False)  # 6-9 lost
    reg.promote("power_lstm", 7, over=5)  # 7 served; 5 and 1 served before it
    assert reg.former_versions("power_lstm") == [1, 5]
    assert reg.prune("power_lstm", keep=2) == [2, 3, 4, 6]
    assert reg.versions("power_lstm") == [1, 5, 7, 8, 9]
    assert reg.prune("power_lstm", keep=1) == [1, 8]  # 5: the last served before 7; 9: the newest
    assert reg.versions("power_lstm") == [5, 7, 9] and reg.active_version("power_lstm") == 7
    assert not list((reg.root / "power_lstm").glob(".staging-*"))
    with pytest.raises(ValueError, match="at least 1"):
        reg.prune("power_lstm", keep=0)


def test_prune_keeps_a_version_a_replica_is_pinned_to_while_the_mark_is_fresh(reg: ModelRegistry,
                                                                              source: Path) -> None:
    """Regression: a PowerPredictor pinned to a version by `model_version` could not start once pruning deleted it."""
    for _ in range(5):
        reg.publish("power_lstm", source, model_type="lstm")  # 5 served, 4 before it
    now = datetime.now(UTC)
    reg.pin("power_lstm", 2, now=now - timedelta(hours=2))
    reg.pin("power_lstm", 1, now=now - timedelta(days=2))  # a pin removed two days ago: its mark has expired
    assert reg.pinned_versions("power_lstm", now=now) == {2}
    assert reg.prune("power_lstm", keep=1) == [1, 3]
    with pytest.raises(ModelNotFoundError):
        reg.pin("power_lstm", 3)
    (reg.root / "power_lstm" / "PINNED").write_text("{not json")
    assert reg.pinned_versions("power_lstm") == set()  # unreadable: no pins, said in the log


def test_a_forced_publish_pins_the_served_version_before_it_appears(reg: ModelRegistry, source: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: publishing with activation did not pin first, so a process killed between the rename and the
    activation left the new version served for being the latest."""
    reg.publish("power_lstm", source, model_type="lstm")
    (reg.root / "power_lstm" / "ACTIVE").unlink()  # 1: served as the latest (a registry from before the pointer)
    monkeypatch.setattr(reg, "activate", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))  # killed there
    with pytest.raises(KeyboardInterrupt):
        reg.publish("power_lstm", source, model_type="lstm")
    assert reg.versions("power_lstm") == [1, 2] and reg.served_version("power_lstm") == 1


def test_resolve_forms(reg: ModelRegistry, source: Path) -> None:
    reg.publish("power_lstm", source, model_type="lstm")
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    assert reg.resolve("power_lstm")[1].version == 1
    assert reg.resolve("power_lstm/2")[1].version == 2
    assert reg.resolve("power_lstm:2")[1].version == 2
    for bad in ("power_lstm/x", "", "../etc", "Power"):
        with pytest.raises(ValueError):
            reg.resolve(bad)


def test_unknown_id_or_version_names_them(reg: ModelRegistry, source: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="nope"):
        reg.get("nope")
    reg.publish("power_lstm", source, model_type="lstm")
    with pytest.raises(ModelNotFoundError, match="'power_lstm' version 5") as info:
        reg.get("power_lstm", 5)
    assert isinstance(info.value, LookupError)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.version == 5


@pytest.mark.parametrize("bad", ["", "Power", "-x", "a/b", "..", "a" * 65, "x y"])
def test_invalid_model_id_refused(reg: ModelRegistry, source: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        reg.publish(bad, source, model_type="lstm")
    assert not reg.root.exists()


def test_invalid_inputs_refused(reg: ModelRegistry, source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        reg.publish("m", source, model_type="xgboost")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        reg.publish("m", tmp_path / "missing", model_type="lstm")
    with pytest.raises(ValueError):
        DataSpan(start=datetime(2024, 1, 1), end=datetime(2024, 1, 2), series=[], rows=0)
    with pytest.raises(ValueError):
        ModelMetadata(model_id="m", version=1, model_type="lstm", created_at=datetime.now(UTC), extra=1)


def test_concurrent_publish_gets_distinct_versions(reg: ModelRegistry, source: Path) -> None:
    barrier, results, errors = threading.Barrier(8), [], []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(reg.publish("power_lstm", source, model_type="lstm").version)
        except Exception as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == list(range(1, 9))
    assert reg.versions("power_lstm") == list(range(1, 9))
    assert not list((reg.root / "power_lstm").glob(".staging-*"))


def test_leftover_staging_and_junk_are_invisible(reg: ModelRegistry, source: Path) -> None:
    reg.publish("power_lstm", source, model_type="lstm")
    model_dir = reg.root / "power_lstm"
    stale = model_dir / ".staging-dead"
    stale.mkdir()
    (stale / "model.pt").write_bytes(b"partial")
    (model_dir / "7").mkdir()  # no metadata.json: incomplete
    (model_dir / "notes").mkdir()
    (reg.root / "orphan" / ".staging-x").mkdir(parents=True)
    assert reg.versions("power_lstm") == [1]
    assert reg.model_ids() == ["power_lstm"]
    assert reg.publish("power_lstm", source, model_type="lstm").version == 8
    assert reg.cleanup_staging() == 0  # too fresh
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert reg.cleanup_staging("power_lstm") == 1
    assert not stale.exists()


def test_a_publish_removes_the_staging_folders_a_killed_publish_left(reg: ModelRegistry, source: Path) -> None:
    model_dir = reg.root / "power_lstm"
    left, fresh = model_dir / ".staging-killed", model_dir / ".staging-running"
    left.mkdir(parents=True)
    fresh.mkdir()
    old = time.time() - 7200
    os.utime(left, (old, old))
    reg.publish("power_lstm", source, model_type="lstm")
    assert not left.exists() and fresh.exists()  # a publish still under way elsewhere keeps its folder


def test_corrupt_metadata_skipped_with_reason(
    reg: ModelRegistry, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg.publish("power_lstm", source, model_type="lstm")
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    (reg.root / "power_lstm" / "2" / "metadata.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert reg.versions("power_lstm") == [1]
    assert "corrupt" in caplog.text
    with pytest.raises(ModelNotFoundError, match="version 2: corrupt"):
        reg.get("power_lstm", 2)


def test_metadata_a_storage_error_keeps_from_being_read_is_unreadable_not_corrupt(
    reg: ModelRegistry, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passing read error is told from a corrupt version (the promotion gate scores no older version in the place
    of one it cannot read just now); it is still a ModelNotFoundError to everything else."""
    reg.publish("power_lstm", source, model_type="lstm")
    metadata = reg.root / "power_lstm" / "1" / "metadata.json"
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
                        if self == metadata else read_bytes(self))
    with pytest.raises(ModelUnreadable, match="version 1: .*cannot be read"):
        reg.get("power_lstm", 1)
    assert issubclass(ModelUnreadable, ModelNotFoundError)


def test_a_newest_version_that_cannot_be_read_just_now_is_not_taken_for_absent(
    reg: ModelRegistry, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): without an ACTIVE pointer the latest version is served; an EIO on the newest version's
    metadata left it out of the versions, so an older one was served, and a publish pinned that one for good."""
    for _ in range(3):
        reg.publish("power_lstm", source, model_type="lstm")
    (reg.root / "power_lstm" / "ACTIVE").unlink()
    metadata = reg.root / "power_lstm" / "3" / "metadata.json"
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
                        if self == metadata else read_bytes(self))
    with pytest.raises(ModelUnreadable):
        reg.get("power_lstm")
    with pytest.raises(ModelUnreadable):
        reg.publish("power_lstm", source, model_type="lstm")
    with pytest.raises(ModelUnreadable):  # nor is the shape to retrain at taken from the config instead
        reg.feature_spec("power_lstm")
    assert reg.model_ids() == ["power_lstm"]  # listed all the same
    monkeypatch.undo()
    assert not (reg.root / "power_lstm" / "ACTIVE").exists() and reg.get("power_lstm")[1].version == 3


def test_failed_publish_leaves_nothing(
    reg: ModelRegistry, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError):
        reg.publish("power_lstm", source, model_type="lstm", metrics={"bad": object()})

    def broken_rename(src: str, dst: str) -> None:
        raise OSError(errno.EIO, "disk on fire")

    monkeypatch.setattr("core.registry.os.rename", broken_rename)
    with pytest.raises(OSError, match="disk on fire"):
        reg.publish("power_lstm", source, model_type="lstm")
    assert reg.versions("power_lstm") == []
    assert reg.active_version("power_lstm") is None
    assert {p.name for p in (reg.root / "power_lstm").iterdir()} <= {".activation"}  # the (empty) lock file at most


def test_an_activation_that_fails_after_the_rename_names_the_registered_version(
    reg: ModelRegistry, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: publish raised the activation's bare OSError, so its callers took the version for unregistered."""
    reg.publish("power_lstm", source, model_type="lstm")
    cause = OSError(errno.ENOSPC, "No space left on device", str(reg.root / "power_lstm" / "ACTIVE"))

    def unwritable(*_args: object) -> None:
        raise cause

    monkeypatch.setattr(reg, "activate", unwritable)
    with pytest.raises(ActivationFailed) as info:
        reg.publish("power_lstm", source, model_type="lstm", metrics={"mae": 1.0})
    failed = info.value
    assert isinstance(failed, OSError) and failed.__cause__ is cause
    assert (failed.metadata.version, failed.metadata.metrics) == (2, {"mae": 1.0})
    assert str(failed) == "power_lstm version 2 is registered, but its activation could not be written"
    assert pickle.loads(pickle.dumps(failed)).metadata == failed.metadata
    assert reg.versions("power_lstm") == [1, 2] and reg.active_version("power_lstm") == 1


def test_nonexistent_root_lists_nothing_and_is_not_created(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "absent")
    assert reg.model_ids() == []
    assert reg.versions("power_lstm") == []
    assert reg.active_version("power_lstm") is None
    assert reg.cleanup_staging() == 0
    with pytest.raises(ModelNotFoundError):
        reg.get("power_lstm")
    assert not reg.root.exists()


def test_atomic_write_helpers(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    atomic_write_json(tmp_path / "b.json", {"x": np.int64(3), "p": Path("/m")})
    assert (tmp_path / "a.txt").read_text() == "two"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 3, "p": "/m"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_regression_an_unreadable_active_pointer_is_an_error_never_the_latest_pinned(reg: ModelRegistry, source: Path,
                                                                                     monkeypatch) -> None:
    """A passing EIO on ACTIVE read as "no pointer": the latest version was served, and the next publish without
    activation pinned it into ACTIVE for good."""
    reg.publish("power_lstm", source, model_type="lstm")
    reg.publish("power_lstm", source, model_type="lstm", activate=False)
    pointer = reg.root / "power_lstm" / "ACTIVE"
    unreadable(monkeypatch, pointer)
    for read in (reg.served_version, reg.active_version, reg.get):
        with pytest.raises(OSError, match="Input/output error"):
            read("power_lstm")
    with pytest.raises(OSError):
        reg.publish("power_lstm", source, model_type="lstm", activate=False)
    monkeypatch.undo()
    assert reg.active_version("power_lstm") == 1 and reg.versions("power_lstm") == [1, 2]


def test_a_version_number_is_never_given_twice(reg: ModelRegistry, source: Path) -> None:
    """Regression: a new version took the highest folder's number + 1, so after the newest folder was deleted by hand
    the next publish reused its number, and replicas serving the deleted one never loaded the new weights (they know
    a version by its number, and so does each node's online calibration)."""
    for _ in range(3):
        reg.publish("power_lstm", source, model_type="lstm")
    shutil.rmtree(reg.root / "power_lstm" / "3")
    assert reg.publish("power_lstm", source, model_type="lstm").version == 4
    assert (reg.root / "power_lstm" / "ISSUED").read_text() == "4\n"


def test_a_stray_folder_with_a_non_ascii_digit_name_is_not_a_version(reg: ModelRegistry, source: Path) -> None:
    """Regression (review): `str.isdigit` takes "²", which `int()` refuses: one such folder failed every listing and
    every publish of the model."""
    reg.publish("power_lstm", source, model_type="lstm")
    (reg.root / "power_lstm" / "²").mkdir()
    assert reg.versions("power_lstm") == [1]
    assert reg.publish("power_lstm", source, model_type="lstm").version == 2
