"""The batch queue: prediction batches run here, at most `batches.max_running` at once, in the order they came.

Waiting batches are bounded twice: `batches.max_waiting` of them, and `batches.max_waiting_bytes` of their records
(a batch of 1,000 items with week-long lists is MBs, so the count alone let hundreds of MiB wait on the state volume).

One actor per records directory (named after it, num_cpus=0), created by the ingress replica that first needs
it and owned by it, so it ends with the app and a redeploy brings one with the new settings (if its owner ends
first, the next submission or read of an unfinished batch starts another). When it starts it
queues every batch its records still show pending or running, oldest first: an app restart resumes them through
the queue, not all at once. It also deletes finished batches once they are older than `batches.retention`, and the
oldest beyond `batches.max_finished`, or beyond `batches.max_finished_bytes` of records.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from app.batches import run_batch
from app.settings import BatchArgs
from core.actors import ActorUnavailable
from core.names import NAMESPACE
from core.records import RecordNotFound, RecordStore

logger = logging.getLogger(__name__)
RunBatch = Callable[[RecordStore, str, str, str], Awaitable[str]]
MAX_SWEEP_INTERVAL_S = 3600.0


class BatchRunner:
    """The queue (plain asyncio; `BatchQueueActor` hosts it in a Ray actor). Call its methods on one event loop."""

    def __init__(self, state_path: str, settings: BatchArgs, app_name: str, power_app_name: str,
                 run: RunBatch = run_batch):
        self.records = RecordStore(state_path, "batches", retention_s=settings.retention)
        self.settings, self.app_name, self.power_app_name, self.run = settings, app_name, power_app_name, run
        self.waiting: deque[str] = deque()
        self.waiting_bytes: dict[str, int] = {}  # each waiting batch's record size
        self.waiting_total = 0  # their sum
        self.running: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._started = False
        self._starting = asyncio.Lock()

    async def start(self) -> int:
        """Begin once: queue the batches left unfinished (their records read off the event loop; calls meanwhile
        wait for it), start the expiry sweep. Returns how many wait."""
        async with self._starting:
            if not self._started:
                resumed = await asyncio.to_thread(self._unfinished)
                if resumed:
                    logger.info("batch queue: resuming %d unfinished batches", len(resumed))
                for batch_id, size in resumed:  # accepted before: queued whatever their size
                    self._enqueue(batch_id, size)
                self._started = True
                self._spawn(self._sweep_forever())
                self._dispatch()
        return len(self.waiting)

    def _unfinished(self) -> list[tuple[str, int]]:
        """The batches left unfinished, oldest first, with their record sizes."""
        return [(record["id"], self._size(record["id"])) for record in self.records.unfinished()]

    async def submit(self, batch_id: str) -> bool:
        """Queue a stored batch; False (nothing queued) when `max_waiting` batches wait already, or when its record
        would take the waiting ones past `max_waiting_bytes` (a batch is queued alone whatever its size)."""
        await self.start()
        size = await asyncio.to_thread(self._size, batch_id)
        # from here to the enqueue nothing awaits: concurrent submits cannot all pass the checks, nor queue one id twice
        if batch_id in self.running or batch_id in self.waiting_bytes:
            return True
        if len(self.waiting) >= self.settings.max_waiting:
            return False
        if self.waiting and self.waiting_total + size > self.settings.max_waiting_bytes:
            return False
        self._enqueue(batch_id, size)
        self._dispatch()
        return True

    def _size(self, batch_id: str) -> int:
        """The batch's record size; 0 when it cannot be told (its run finds out what is wrong with it)."""
        try:
            return self.records.size(batch_id)
        except (OSError, RecordNotFound):
            return 0

    def _enqueue(self, batch_id: str, size: int) -> None:
        self.waiting.append(batch_id)
        self.waiting_bytes[batch_id] = size
        self.waiting_total += size

    def _dispatch(self) -> None:
        while self.waiting and len(self.running) < self.settings.max_running:
            batch_id = self.waiting.popleft()
            self.waiting_total -= self.waiting_bytes.pop(batch_id)
            self.running.add(batch_id)
            self._spawn(self._run(batch_id))

    async def _run(self, batch_id: str) -> None:
        try:
            await self.run(self.records, batch_id, self.app_name, self.power_app_name)
        except RecordNotFound:
            logger.info("batch %s: its record is gone (expired or deleted); skipped", batch_id)
        except Exception:
            logger.exception("batch %s could not be run", batch_id)
        finally:
            self.running.discard(batch_id)
            self._dispatch()
        try:
            await asyncio.to_thread(self.records.trim, self.settings.max_finished,
                                    len(self.waiting) + len(self.running) + self.settings.max_running,
                                    self.settings.max_finished_bytes, (batch_id,))  # just finished: kept
        except OSError:
            logger.warning("batch queue: cannot trim the finished batches", exc_info=True)

    async def _sweep_forever(self) -> None:
        interval = min(self.settings.retention / 4, MAX_SWEEP_INTERVAL_S)
        while True:
            try:
                await asyncio.to_thread(self.records.expire)
            except Exception:  # noqa: BLE001 - a storage error or a record it cannot read: the next sweep tries again
                logger.warning("batch queue: expiry sweep failed", exc_info=True)
            await asyncio.sleep(interval)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(self._tasks.discard)


BatchQueueActor = ray.remote(num_cpus=0)(BatchRunner)


def queue_name(state_path: str) -> str:
    """The actor's name: one queue per records directory."""
    return f"batch_queue-{hashlib.sha256(state_path.encode()).hexdigest()[:16]}"


class BatchQueueClient:
    """The ingress replica's handle on its queue; creates the actor (owned by this replica) when there is none.

    It keeps the handle: a non-detached actor ends when no handle to it is left.
    """

    def __init__(self, state_path: str, settings: BatchArgs, app_name: str, power_app_name: str):
        self.args = (state_path, settings, app_name, power_app_name)
        self.name = queue_name(state_path)
        self._handle: ray.actor.ActorHandle | None = None

    def start(self) -> None:
        """Create (or find) the queue now, so batches left unfinished resume without waiting for a new one."""
        self._actor().start.remote()

    async def submit(self, batch_id: str) -> bool:
        """Queue a stored batch (False: the queue is full). Raises ActorUnavailable."""
        try:
            return await self._actor().submit.remote(batch_id)
        except RayActorError:  # it ended with its owner (another replica): a new queue takes over
            self._handle = None
        try:
            return await self._actor().submit.remote(batch_id)
        except RayActorError as exc:
            raise ActorUnavailable(f"the batch queue did not answer: {type(exc).__name__}") from exc

    async def resume_if_lost(self) -> None:
        """Bring the queue back when it ended with the replica that owned it (a new one resumes the unfinished
        batches): a read of a pending or running batch calls this, so such a batch never waits on nothing."""
        try:
            await self._actor().start.remote()
        except RayActorError:
            self._handle = None
            self._actor().start.remote()

    def _actor(self) -> ray.actor.ActorHandle:
        if self._handle is None:
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)  # by the records
            self._handle = BatchQueueActor.options(name=self.name, namespace=NAMESPACE, get_if_exists=True,
                                                   scheduling_strategy=here).remote(*self.args)
        return self._handle
