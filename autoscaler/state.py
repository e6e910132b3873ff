"""The controller's durable state: policies, each policy's cooldown clock and last decision, and events.

One SQLite file (WAL) under the app's state directory, so a restarted controller actor finds everything it
had. Every write is one transaction. Policies from the config file are "seeded": applied when their
content differs from what was last seeded under that name, so a restart never undoes an API change, while
an edited config file still takes effect.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

from autoscaler.decision import PolicyState
from autoscaler.schema import ScalingEvent, ScalingPolicy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS policy_state (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seeded (name TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, policy TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_policy_at ON events (policy, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
"""


def _digest(policy: ScalingPolicy) -> str:
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


class ControllerState:
    """Policies, per-policy state and scaling events in one SQLite file (thread-safe)."""

    def __init__(self, path: str | Path, max_events: int = 100_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_events = max_events
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- policies ----------------------------------------------------------------------------------------

    def policies(self) -> list[ScalingPolicy]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM policies ORDER BY name").fetchall()
        return [ScalingPolicy.model_validate_json(body) for (body,) in rows]

    def policy(self, name: str) -> ScalingPolicy | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM policies WHERE name = ?", (name,)).fetchone()
        return ScalingPolicy.model_validate_json(row[0]) if row else None

    def put_policy(self, policy: ScalingPolicy, now: datetime) -> bool:
        """Create or replace by name; True when it was created. A replaced policy keeps its cooldown clock."""
        with self._lock, self._db:
            created = self._db.execute("SELECT 1 FROM policies WHERE name = ?", (policy.name,)).fetchone() is None
            self._db.execute("INSERT OR REPLACE INTO policies VALUES (?, ?, ?)",
                             (policy.name, policy.model_dump_json(), now.isoformat()))
        return created

    def delete_policy(self, name: str) -> bool:
        """Remove a policy and its state (its events stay); False when there was none."""
        with self._lock, self._db:
            deleted = self._db.execute("DELETE FROM policies WHERE name = ?", (name,)).rowcount > 0
            self._db.execute("DELETE FROM policy_state WHERE name = ?", (name,))
        return deleted

    def seed(self, policies: list[ScalingPolicy], now: datetime) -> list[str]:
        """Apply config-file policies whose content changed since they were last seeded; returns their names."""
        applied = []
        for policy in policies:
            digest = _digest(policy)
            with self._lock:
                row = self._db.execute("SELECT digest FROM seeded WHERE name = ?", (policy.name,)).fetchone()
            if row and row[0] == digest:
                continue
            self.put_policy(policy, now)
            with self._lock, self._db:
                self._db.execute("INSERT OR REPLACE INTO seeded VALUES (?, ?)", (policy.name, digest))
            applied.append(policy.name)
        return applied

    # --- per-policy state --------------------------------------------------------------------------------

    def policy_state(self, name: str) -> PolicyState:
        with self._lock:
            row = self._db.execute("SELECT body FROM policy_state WHERE name = ?", (name,)).fetchone()
        return PolicyState.model_validate_json(row[0]) if row else PolicyState()

    # --- events ------------------------------------------------------------------------------------------

    def record(self, event: ScalingEvent, state: PolicyState | None = None) -> ScalingEvent:
        """Store an event (and the policy's new state, in the same transaction); returns it with its id."""
        with self._lock, self._db:
            cursor = self._db.execute("INSERT INTO events (at, policy, body) VALUES (?, ?, '')",
                                      (event.at.timestamp(), event.policy))
            stored = event.model_copy(update={"id": cursor.lastrowid})
            self._db.execute("UPDATE events SET body = ? WHERE id = ?", (stored.model_dump_json(), stored.id))
            if state is not None:  # not for a policy deleted while its tick ran
                self._db.execute("INSERT OR REPLACE INTO policy_state SELECT ?, ? WHERE EXISTS "
                                 "(SELECT 1 FROM policies WHERE name = ?)",
                                 (event.policy, state.model_dump_json(), event.policy))
            if stored.id % 1000 == 0:  # keep the newest max_events
                self._db.execute("DELETE FROM events WHERE id <= ?", (stored.id - self.max_events,))
        return stored

    def events(self, policy: str | None = None, since: datetime | None = None, limit: int = 100) -> list[ScalingEvent]:
        """Events newest first, optionally of one policy and at or after `since`."""
        clauses, params = [], []
        if policy is not None:
            clauses.append("policy = ?")
            params.append(policy)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since.timestamp())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(f"SELECT body FROM events {where} ORDER BY at DESC, id DESC LIMIT ?",
                                    (*params, limit)).fetchall()
        return [ScalingEvent.model_validate_json(body) for (body,) in rows]
