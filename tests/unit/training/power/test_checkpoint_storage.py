"""Checkpoint storage: URIs and network mounts are shared; a local path only while the run stays on one machine."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest

from core.settings import ConfigError
from training.power.checkpoint_storage import (
    StorageNotShared,
    check_after_run,
    check_before_run,
    filesystem_type,
    is_shared,
    is_uri,
    run_storage,
    worker_needs,
)

MOUNTS = """overlay / overlay rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
server:/export /mnt/shared nfs4 rw,vers=4.2 0 0
bucket /mnt/gcs fuse.gcsfuse rw 0 0
/dev/sda1 /mnt/shared/local ext4 rw 0 0
server:/x /mnt/with\\040space nfs rw 0 0
"""


def node(node_id: str, address: str, cpus: float = 1.0, alive: bool = True, **extra: float) -> dict:
    return {"NodeID": node_id, "NodeManagerAddress": address, "Alive": alive, "Resources": {"CPU": cpus, **extra}}


def test_uris_are_remote_but_file_uris_are_local():
    assert is_uri("s3://bucket/checkpoints") and is_uri("gs://b/c") and is_uri("abfss://c@a.dfs.core.windows.net/p")
    assert not is_uri("file:///mnt/shared") and not is_uri("/mnt/shared") and not is_uri("relative/dir")


def test_the_longest_mount_point_names_the_filesystem():
    assert filesystem_type("/mnt/shared/runs", MOUNTS) == "nfs4"
    assert filesystem_type("/mnt/shared/local/runs", MOUNTS) == "ext4"
    assert filesystem_type("/mnt/shared", MOUNTS) == "nfs4"
    assert filesystem_type("/mnt/sharedother", MOUNTS) == "overlay"
    assert filesystem_type("/mnt/with space/x", MOUNTS) == "nfs"
    assert filesystem_type("file:///tmp/x", MOUNTS) == "tmpfs"


def test_shared_storage():
    assert is_shared("s3://bucket/x", MOUNTS)
    assert is_shared("/mnt/shared/runs", MOUNTS) and is_shared("/mnt/gcs/runs", MOUNTS)
    assert not is_shared("/mnt/shared/local/runs", MOUNTS) and not is_shared("/tmp/runs", MOUNTS)
    assert not is_shared(None, MOUNTS)


def test_a_folder_the_operator_declares_shared_is_shared(monkeypatch):
    """A ReadWriteMany volume of a type /proc/mounts does not tell (WekaFS, a hostPath class on a one-machine test
    cluster) was refused with no way round it."""
    assert is_shared("/models/ray-checkpoints", MOUNTS, declared="/data:/models")
    assert not is_shared("/modelsx/runs", MOUNTS, declared="/models") and not is_shared(None, MOUNTS, "/models")
    monkeypatch.setenv("KCLOUD_SHARED_PATHS", "/models")
    nodes = [node("head", "10.0.0.1"), node("worker", "10.0.0.2")]
    check_before_run("/models/ray-checkpoints", worker_needs(1.0, False), nodes, "head", MOUNTS)
    with pytest.raises(StorageNotShared, match="KCLOUD_SHARED_PATHS"):
        check_before_run("/tmp/runs", worker_needs(1.0, False), nodes, "head", MOUNTS)


def test_one_machine_with_several_raylets_may_keep_a_local_path():
    nodes = [node("head", "10.0.0.1"), node("second", "10.0.0.1")]
    check_before_run("/tmp/runs", worker_needs(1.0, False), nodes, "head", MOUNTS)
    check_before_run(None, worker_needs(1.0, False), nodes, "head", MOUNTS)
    check_after_run(None, ["head", "second"], nodes, "head", MOUNTS)


def test_a_local_path_is_refused_when_workers_may_land_on_another_machine():
    nodes = [node("head", "10.0.0.1"), node("worker", "10.0.0.2")]
    with pytest.raises(StorageNotShared) as refused:
        check_before_run("/tmp/runs", worker_needs(1.0, False), nodes, "head", MOUNTS)
    message = str(refused.value)
    assert message.startswith("storage_path: '/tmp/runs' is local to one machine, but the driver and the nodes that")
    assert "10.0.0.1, 10.0.0.2" in message and "--storage-path" in message and "s3://" in message
    assert isinstance(refused.value, ConfigError)
    with pytest.raises(StorageNotShared, match="the default \\(a temporary local folder\\)"):
        check_before_run(None, worker_needs(1.0, False), nodes, "head", MOUNTS)


def test_a_driver_on_a_cpu_less_head_with_workers_elsewhere_is_refused():
    nodes = [node("head", "10.0.0.1", cpus=0), node("worker", "10.0.0.2")]
    with pytest.raises(StorageNotShared):
        check_before_run(None, worker_needs(1.0, False), nodes, "head", MOUNTS)


def test_nodes_that_cannot_host_a_worker_or_are_dead_do_not_count():
    nodes = [node("head", "10.0.0.1", trainer=1), node("gpu-less", "10.0.0.2"),
             node("gone", "10.0.0.3", alive=False, trainer=1)]
    check_before_run(None, worker_needs(1.0, False, {"trainer": 1}), nodes, "head", MOUNTS)
    with pytest.raises(StorageNotShared):
        check_before_run(None, worker_needs(1.0, False), nodes, "head", MOUNTS)
    with pytest.raises(StorageNotShared):  # a GPU worker fits only on the GPU node
        check_before_run(None, worker_needs(1.0, True), [node("head", "10.0.0.1"),
                                                         node("gpu", "10.0.0.2", GPU=1)], "head", MOUNTS)


def test_shared_storage_is_never_refused():
    nodes = [node("head", "10.0.0.1"), node("worker", "10.0.0.2")]
    check_before_run("s3://bucket/runs", worker_needs(1.0, False), nodes, "head", MOUNTS)
    check_before_run("/mnt/shared/runs", worker_needs(1.0, False), nodes, "head", MOUNTS)
    check_after_run("/mnt/shared/runs", ["worker"], nodes, "head", MOUNTS)


def test_after_the_run_the_nodes_the_workers_used_decide():
    nodes = [node("head", "10.0.0.1"), node("autoscaled", "10.0.0.2")]
    check_after_run("/tmp/runs", ["head"], nodes, "head", MOUNTS)
    with pytest.raises(StorageNotShared, match="the driver and the training workers span 2 machines"):
        check_after_run("/tmp/runs", ["head", "autoscaled"], nodes, "head", MOUNTS)


def _run_writes(storage: str, name: str) -> Path:
    """What Ray Train leaves of a run: a checkpoint in the run's folder."""
    checkpoint = Path(storage.removeprefix("file://")) / name / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    (checkpoint / "weights.pt").write_bytes(b"w")
    return checkpoint.parent


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_run_folder_under_a_storage_path_is_deleted_once_read_and_its_neighbours_kept(tmp_path, scheme):
    (tmp_path / "other_run").mkdir()
    with run_storage(f"{scheme}{tmp_path}", "power_lstm") as (storage, name):
        assert storage == f"{scheme}{tmp_path}" and name.startswith("power_lstm_")
        folder = _run_writes(storage, name)
    assert not folder.exists() and (tmp_path / "other_run").exists()


def test_a_failed_run_is_cleaned_too_and_the_error_kept(tmp_path, caplog):
    with pytest.raises(RuntimeError, match="no checkpoint"):
        with run_storage(str(tmp_path), "power_lstm") as (storage, name):
            folder = _run_writes(storage, name)
            raise RuntimeError("training reported no checkpoint")
    assert not folder.exists()
    with caplog.at_level(logging.WARNING), run_storage(str(tmp_path), "power_lstm"):
        pass  # nothing written: nothing to delete
    assert not caplog.records


def test_a_run_under_a_uri_is_deleted_through_pyarrow(tmp_path, monkeypatch):
    opened = []

    def from_uri(uri: str):
        opened.append(uri)
        return pyarrow.fs.LocalFileSystem(), f"{tmp_path}/runs/"

    monkeypatch.setattr("training.power.checkpoint_storage.FileSystem", SimpleNamespace(from_uri=from_uri))
    with run_storage("s3://bucket/runs", "power_lstm_tune") as (storage, name):
        folder = _run_writes(str(tmp_path / "runs"), name)
    assert opened == ["s3://bucket/runs"] and not folder.exists() and (tmp_path / "runs").exists()


def test_a_folder_that_cannot_be_deleted_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("training.power.checkpoint_storage.shutil.rmtree", refuse)
    with caplog.at_level(logging.WARNING), run_storage(str(tmp_path), "power_lstm") as (storage, name):
        _run_writes(storage, name)
    assert f"could not delete the run folder {name} under {tmp_path}" in caplog.text


def test_without_a_storage_path_a_temporary_folder_is_used_and_removed():
    with run_storage(None, "power_lstm") as (storage, name):
        folder = _run_writes(storage, name)
    assert not Path(storage).exists() and not folder.exists()
