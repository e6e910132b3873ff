"""Keep a replica on the registry's active model version, without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from core.registry import ActivePointerUnreadable, ModelRegistry

logger = logging.getLogger("ray.serve")
RETRY_FAILED_LOAD_S = 300.0  # a version that failed to load is tried again this long after, not at every poll


class RegistryFollower:
    """Base for predictor replicas: `_load(version)` is theirs; this polls the active pointer and calls it."""

    registry: ModelRegistry
    model_id: str
    version: int | None = None

    def _load(self, version: int | None) -> None:
        raise NotImplementedError

    def _load_default(self) -> str:
        """Load the active version, else the newest one served before it that loads (an active version this image
        cannot read must not take the replica, or the API holding it, down); "" when one loaded, else why none did
        (the replica serves nothing and its health check says why, until a later or pinned version loads). An ACTIVE
        pointer that cannot be read loads nothing: which version is active is not known, and the follower loads it
        once the pointer can be read."""
        try:
            self._load(None)
            return ""
        except ActivePointerUnreadable as exc:  # which version is active is not known: none is served on a guess
            logger.error("%s: %s; nothing is served until it can be read", type(self).__name__, exc)
            return f"{exc}; nothing is served until it can be read"
        except Exception as exc:  # noqa: BLE001 - any unloadable version: try the ones served before
            first = exc
            logger.exception("%s: the active version of %s cannot be loaded", type(self).__name__, self.model_id)
            self._note_failed_default()
        try:
            former = self.registry.former_versions(self.model_id)
        except (OSError, ValueError) as exc:  # an unreadable or damaged history: no version to fall back on
            logger.error("%s: the versions served before cannot be read: %s", type(self).__name__, exc)
            former = []
        for version in reversed(former):
            try:
                self._load(version)
            except Exception:  # noqa: BLE001 - older still
                continue
            logger.error("%s: serving %s version %d, served before the active one, which cannot be loaded",
                         type(self).__name__, self.model_id, version)
            return ""
        return f"no version of {self.model_id} could be loaded ({type(first).__name__}: {first})"

    def _note_failed_default(self) -> None:
        """Note that the served version failed to load, so that the first polls do not load it again at once (it is
        tried again after RETRY_FAILED_LOAD_S, as one that failed on a poll)."""
        try:
            self._load_failed(self.model_id, self.registry.served_version(self.model_id))
        except (OSError, ValueError) as exc:  # which one is not known: the first poll tries it again
            logger.debug("%s: the served version of %s cannot be named: %s", type(self).__name__, self.model_id, exc)

    def _refresh(self) -> None:
        """Load the served version (the active one, else the latest, as GET /api/v1/models and a new replica take
        it) if it is not the one served now (a replica serving several models overrides this)."""
        wanted = self.registry.served_version(self.model_id)
        if wanted is None or wanted == self.version or not self._load_due(self.model_id, wanted):
            return
        try:
            self._load(wanted)
        except Exception:
            self._load_failed(self.model_id, wanted)
            raise
        self._load_failed(self.model_id, None)

    def _load_due(self, model_id: str, version: int) -> bool:
        """Whether to try loading `version`: not while it failed less than RETRY_FAILED_LOAD_S ago (a traceback at
        every poll otherwise)."""
        failed = vars(self).get("_failed_loads", {}).get(model_id)
        return failed is None or failed[0] != version or time.monotonic() >= failed[1]

    def _load_failed(self, model_id: str, version: int | None) -> None:
        """Note that loading `version` of the model failed now (None: a version loaded, nothing failed)."""
        failed = vars(self).setdefault("_failed_loads", {})
        if version is None:
            failed.pop(model_id, None)
        else:
            failed[model_id] = (version, time.monotonic() + RETRY_FAILED_LOAD_S)

    def _start_following(self, poll_s: Callable[[], float], pinned: Callable[[], bool] = lambda: False) -> None:
        """Poll every `poll_s()` seconds; while `pinned()` is true, stay on the current version."""
        self._follower = asyncio.get_event_loop().create_task(self._follow(poll_s, pinned))

    async def _follow(self, poll_s: Callable[[], float], pinned: Callable[[], bool]) -> None:
        while True:
            await asyncio.sleep(poll_s())
            if pinned():
                continue
            try:  # off the event loop: loading weights must not stall the replica's requests and health checks
                await asyncio.to_thread(self._refresh)
            except Exception:  # noqa: BLE001 - keep serving the loaded model
                logger.exception("%s: could not load the new active version; keeping version %s",
                                 type(self).__name__, self.version)
