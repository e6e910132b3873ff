"""Where Ray Train keeps a run's checkpoints, and whether every machine of the run reaches it.

Ray Train's workers write their checkpoints under `storage_path` and the driver reads the best one back, so
the path must mean the same storage on every machine involved. An object-store URI (s3://, gs://, ...) does;
so does a path on a network filesystem (NFS, CephFS, ...) mounted at the same place on every node. A local
path (the default, a temporary folder) does only while the driver and every node that could host a worker
share one machine (several raylets on one host are fine). Training refuses a local path up front when the
alive nodes able to host a worker are on another machine than the driver, and again after the run when a
worker did land elsewhere (an autoscaled node): `StorageNotShared`, a ConfigError that says why.

A shared volume of a type the mount table does not tell (a ReadWriteMany class on WekaFS, Alluxio, a hostPath on a
one-machine test cluster whose pods each have an IP) is declared by the operator: `KCLOUD_SHARED_PATHS`, folders
separated by `:`, under which a path counts as shared (the KubeRay manifests declare their `/models` volume).

Each run keeps its state in a folder of its own under `storage_path` (`run_storage`), deleted once its result has
been read: the registry holds the weights, and an hourly retrain would otherwise fill the volume.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import ray
from pyarrow.fs import FileSystem

from core.settings import ConfigError

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "virtiofs",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.glusterfs", "fuse.ceph-fuse", "fuse.sshfs",
    "fuse.rclone", "fuse.mountpoint-s3", "fuse.goofys", "fuse.blobfuse", "fuse.blobfuse2",
})
"""Mount types whose files every machine that mounts them sees (fuse.* ones named by their helper)."""

logger = logging.getLogger(__name__)

MOUNTS_FILE = Path("/proc/mounts")
SHARED_PATHS_ENV = "KCLOUD_SHARED_PATHS"


class StorageNotShared(ConfigError):
    """A local checkpoint path for a run whose machines cannot all reach it; the message says what to use."""


def is_uri(storage_path: str) -> bool:
    """True for an object-store or remote filesystem URI (`file://` is a local path)."""
    scheme, found, _ = storage_path.partition("://")
    return bool(found) and scheme.lower() != "file" and scheme.isidentifier()


def filesystem_type(path: str, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding `path` (the longest mount point above it), from /proc/mounts."""
    if mounts is None:
        try:
            mounts = MOUNTS_FILE.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None  # no /proc (macOS): unknown, treated as local
    target = os.path.realpath(path.removeprefix("file://"))
    best, kind = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def is_shared(storage_path: str | None, mounts: str | None = None, declared: str | None = None) -> bool:
    """A URI, a path on a network filesystem, or one under a folder declared shared (`declared`, else the
    environment's KCLOUD_SHARED_PATHS); None (a temporary local folder) is not."""
    if storage_path is None:
        return False
    return (is_uri(storage_path) or filesystem_type(storage_path, mounts) in NETWORK_FILESYSTEMS
            or _declared_shared(storage_path, os.environ.get(SHARED_PATHS_ENV, "") if declared is None else declared))


def _declared_shared(storage_path: str, declared: str) -> bool:
    target = os.path.realpath(storage_path.removeprefix("file://"))
    folders = [os.path.realpath(folder) for folder in declared.split(":") if folder.strip()]
    return any(target == folder or target.startswith(folder.rstrip("/") + "/") for folder in folders)


def worker_needs(cpus_per_worker: float, use_gpu: bool, extra: Mapping[str, float] | None = None) -> dict[str, float]:
    """The resources one Ray Train worker reserves."""
    return {"CPU": cpus_per_worker, **({"GPU": 1.0} if use_gpu else {}), **(extra or {})}


def _can_host(node: Mapping, needs: Mapping[str, float]) -> bool:
    total = node.get("Resources") or {}
    return all(total.get(name, 0.0) >= amount for name, amount in needs.items() if amount > 0)


def _hosts(nodes: Iterable[Mapping]) -> set[str]:
    return {str(node.get("NodeManagerAddress")) for node in nodes}


def _refusal(storage_path: str | None, hosts: set[str], when: str) -> StorageNotShared:
    what = f"{storage_path!r} is" if storage_path else "the default (a temporary local folder) is"
    return StorageNotShared(
        f"storage_path: {what} local to one machine, but {when} span {len(hosts)} machines "
        f"({', '.join(sorted(hosts))}): Ray Train's checkpoints must be on storage all of them reach; give "
        "--storage-path (or KCLOUD_STORAGE_PATH, or the config's storage_path) an object-store URI (s3://..., "
        "gs://...) or a path on a shared filesystem (NFS, CephFS, ...) mounted at the same place on every node; "
        f"a shared volume of a type not recognised here is declared with {SHARED_PATHS_ENV}=FOLDER")


def check_before_run(storage_path: str | None, needs: Mapping[str, float], nodes: list[Mapping] | None = None,
                     driver_node: str | None = None, mounts: str | None = None) -> None:
    """Refuse a local `storage_path` when a worker could be placed on another machine than the driver.

    Raises:
        StorageNotShared: naming the machines and what to use instead.
    """
    if is_shared(storage_path, mounts):
        return
    nodes = ray.nodes() if nodes is None else nodes
    driver_node = driver_node or ray.get_runtime_context().get_node_id()
    alive = [node for node in nodes if node.get("Alive")]
    involved = [node for node in alive if node.get("NodeID") == driver_node or _can_host(node, needs)]
    hosts = _hosts(involved)
    if len(hosts) > 1:
        raise _refusal(storage_path, hosts, "the driver and the nodes that can host a training worker")


def check_after_run(storage_path: str | None, worker_nodes: Iterable[str], nodes: list[Mapping] | None = None,
                    driver_node: str | None = None, mounts: str | None = None) -> None:
    """Refuse the result of a run whose workers landed on another machine than the driver, on local storage.

    Raises:
        StorageNotShared: naming the machines and what to use instead.
    """
    if is_shared(storage_path, mounts):
        return
    nodes = ray.nodes() if nodes is None else nodes
    driver_node = driver_node or ray.get_runtime_context().get_node_id()
    wanted = {driver_node, *worker_nodes}
    hosts = _hosts(node for node in nodes if node.get("NodeID") in wanted)
    if len(hosts) > 1:
        raise _refusal(storage_path, hosts, "the driver and the training workers")


@contextmanager
def run_storage(storage_path: str | None, prefix: str) -> Iterator[tuple[str, str]]:
    """(storage path, run name) for one Ray Train or Tune run, the name unique in a shared storage path; on exit
    the run's folder is deleted: a temporary folder without `storage_path`, else `remove_run`."""
    name = f"{prefix}_{int(time.time())}_{uuid.uuid4().hex[:8]}"
    if storage_path is None:
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as scratch:
            yield scratch, name
        return
    try:
        yield storage_path, name
    finally:
        remove_run(storage_path, name)


def remove_run(storage_path: str, name: str) -> None:
    """Delete the folder `name` under `storage_path` (a path, or a URI pyarrow reads, as Ray Train does); a failure
    is logged, not raised: the run's result was read already."""
    try:
        if is_uri(storage_path):
            filesystem, root = FileSystem.from_uri(storage_path)
            filesystem.delete_dir(f"{root.rstrip('/')}/{name}")
        else:
            shutil.rmtree(Path(storage_path.removeprefix("file://")) / name)
    except FileNotFoundError:
        pass  # the run failed before writing anything
    except (OSError, ValueError) as exc:  # pyarrow's errors are OSError or ValueError (ArrowInvalid)
        logger.warning("could not delete the run folder %s under %s: %s", name, storage_path, exc)
