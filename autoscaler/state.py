"""The controller's durable state: policies, each policy's cooldown clock and recent recommendations, events, the
actuations in flight (intents), the lease that lets one controller act on targets, the nodes whose forecasts
live accuracy stopped trusting, and each policy's online correction of its peak bound.

One SQLite file (WAL) under the app's state directory, so a restarted controller actor finds everything it had.
Every write is one transaction (BEGIN IMMEDIATE, so controllers sharing the file take turns). Policies from the
config file are "seeded": applied when their content differs from what was last seeded under that name, so a
restart never undoes an API change, while an edited config file still takes effect (a policy removed from it is
deleted, unless the API changed it since).

A file SQLite cannot read (not a database, or damaged) is moved aside and a new one started, its cooldowns from
then (kept in the new file): the controller keeps scaling rather than failing to start; a file SQLite reports
damaged while the controller runs is replaced the same way at the start of the next tick, and a file another
controller set aside, or an operator replaced or deleted, is followed then. Controllers sharing the file open, check
and set it aside one at a time (a flock on `<file>.lock`, which stays beside it).
A stored policy that no longer validates (an older version's row, a value stored before a check existed, a
`max_replicas` above a lowered cap) is read as an `InvalidStoredPolicy` with its reason, never an exception.
The lease is one row (holder, expiry): `acquire_lease` takes it when it is free, expired or already the
caller's, and renews it; an intent is only written while the lease row names its writer, and renews it
(autoscaler/intents.py). A policy's state and the kept tables (fallback nodes, bound corrections) are written
only while the lease row names their writer too: a tick that ran past its lease while another controller took it
over records its events, but never undoes the new holder's cooldowns.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from autoscaler.decision import PolicyState
from autoscaler.policy_bounds import SavedBound
from autoscaler.schema import (
    ActuationResult,
    ActuationStatus,
    InvalidStoredPolicy,
    ScalingEvent,
    ScalingPolicy,
    ScalingTarget,
    StoredPolicies,
    policy_context,
)
from autoscaler.settings import DEFAULT_MAX_EVENTS, DEFAULT_MAX_POLICIES, DEFAULT_MAX_REPLICAS_CAP
from core.file_lock import open_guard, take_flock
from core.settings import format_errors

logger = logging.getLogger(__name__)
SKEWED_LEASE_TERMS = 2  # another's lease running further ahead of this clock is shortened to this many terms
FULL_CHECK_EVERY_S = 600.0  # SQLite's full integrity check of a file it reports damaged, at most this often

_ADDED_COLUMNS = {"intent_prior": {"recorded_at": "REAL"}}
"""Columns added to a table after versions that created it without them (CREATE TABLE IF NOT EXISTS never adds
one): added at open, NULL in the rows those versions wrote, which the readers take as not known."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS policy_state (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seeded (name TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, policy TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_policy_at ON events (policy, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS intents (name TEXT PRIMARY KEY, event_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS intent_prior (
    name TEXT PRIMARY KEY, event_id INTEGER NOT NULL, body TEXT NOT NULL, recorded_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 0), holder TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS live_fallback (
    version TEXT NOT NULL, node TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (version, node));
CREATE TABLE IF NOT EXISTS bound_tracking (
    policy TEXT PRIMARY KEY, meaning TEXT NOT NULL, log_factor REAL NOT NULL, windows INTEGER NOT NULL,
    misses INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS started_afresh (id INTEGER PRIMARY KEY CHECK (id = 0), at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS target_changes (
    target TEXT PRIMARY KEY, at REAL NOT NULL, policy TEXT NOT NULL, prior_at REAL, prior_policy TEXT);
"""
_MAX_REASON_CHARS = 2000
_TARGET: TypeAdapter[ScalingTarget] = TypeAdapter(ScalingTarget)


_UNREADABLE_PENDING = ("abandoned: stored by another version in a form this one cannot read, before this change was "
                       "confirmed (whether it landed is not known)")


class _Damaged(sqlite3.DatabaseError):
    """SQLite's integrity check found the file damaged."""


FileId = tuple[int, int]


def _file_id(path: Path) -> FileId | None:
    """The file at `path` (device, inode); None when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


@contextmanager
def _one_at_a_time(path: Path, timeout_s: float = 10.0) -> Iterator[None]:
    """An advisory lock (flock) on `<state file>.lock`, held by one process at a time and released with it if it
    dies; waited for up to `timeout_s` (SQLite's own busy timeout), then "database is locked" as SQLite says it. The
    lock file is opened for writing, as an NFS client's flock needs, or read-only where this user may not write it
    (one another user created still locks: core/file_lock.py)."""
    descriptor = open_guard(Path(f"{path}.lock"))
    try:
        if not take_flock(descriptor, timeout_s, poll_s=0.05):
            raise sqlite3.OperationalError(f"database is locked: {path}.lock held by another controller for "
                                           f"{timeout_s:g} s")
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is not a database or is damaged (not that it may not open or write it); its
    extended codes (SQLITE_CORRUPT_INDEX, ...) included."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, _Damaged) or (isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_CORRUPT,
                                                                                    sqlite3.SQLITE_NOTADB))


class TooManyPolicies(ValueError):
    """A new policy would exceed `auto_scaling.max_policies`."""


class PolicyChanged(ValueError):
    """A write conditioned on the policy as it was read (`If-Match`) found it changed, deleted, or never there."""


def policy_tag(policy: ScalingPolicy) -> str:
    """The version tag of a policy as stored (its entity tag over HTTP): changes with any field."""
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()[:20]


def _stored_tag(body: str) -> str:
    """`policy_tag` of a stored body (of the text itself where it no longer validates)."""
    try:
        return policy_tag(ScalingPolicy.model_validate_json(body))
    except ValidationError:
        return hashlib.sha256(body.encode()).hexdigest()[:20]


class OverReplicasCap(ValueError):
    """A policy's `max_replicas` exceeds the controller's `auto_scaling.max_replicas_cap` (validated elsewhere
    against another cap: an API replica that read the config before it was lowered)."""


class StateUnavailable(RuntimeError):
    """The state file cannot be used just now (locked past its timeout, a disk error, closed while it is reopened
    after a move): a request may try again; the message names no path."""


_PASSING = ("database is locked", "disk i/o error", "unable to open", "closed database", "readonly database",
            "disk is full", "table is locked")


@contextmanager
def passing_errors_unavailable() -> Iterator[None]:
    """Raise the state file's passing errors (`_PASSING`) as StateUnavailable; any other SQLite error (a bug: a bad
    query, a constraint) as it is."""
    try:
        yield
    except sqlite3.Error as exc:
        if not any(phrase in str(exc).lower() for phrase in _PASSING):
            raise
        logger.warning("controller state: %s", exc)
        raise StateUnavailable(f"the scaling controller's state cannot be used just now ({type(exc).__name__}); "
                               "try again") from None


class IntentRefused(RuntimeError):
    """The intent was not recorded (so nothing may be actuated): the lease is not held, or the policy is gone."""


@dataclass(frozen=True)
class IntentRecord:
    """What is kept with an intent beside its event: when it was recorded (its write follows), and the policy's
    state before it (restored when the write is found never to have landed)."""

    prior: PolicyState
    recorded_at: datetime


class Lease(BaseModel):
    """Who may act on targets, until when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    holder: str
    expires_at: datetime

    def held_by(self, holder: str, now: datetime) -> bool:
        return self.holder == holder and now < self.expires_at


def _digest(policy: ScalingPolicy) -> str:
    """What a seeded policy says, as a digest: only the values that differ from the schema's defaults, so a version
    that adds a field (with its default) does not make an unchanged config file look edited."""
    return hashlib.sha256(policy.model_dump_json(exclude_defaults=True).encode()).hexdigest()


_ADDED_SINCE_THE_FULL_DIGEST = {"power_based": {"idle_power_watts", "measure_idle_power"},
                                "predictive_scaling": {"online_bound"}}
"""Policy fields added after 2026-12-04, when the digest over every field was last stored: left out of that form."""


def _digest_until_2026_12(policy: ScalingPolicy) -> str | None:
    """The digest as stored until 2026-12-04: over every field the policy had then; None for a policy that sets a
    field added since to other than its default (no version of then seeded it: it is an edit)."""
    for section, names in _ADDED_SINCE_THE_FULL_DIGEST.items():
        part = getattr(policy, section)
        if any(getattr(part, name) != type(part).model_fields[name].default for name in names):
            return None
    return hashlib.sha256(policy.model_dump_json(exclude=_ADDED_SINCE_THE_FULL_DIGEST).encode()).hexdigest()


def _target_key(target: ScalingTarget) -> str:
    """A target as one text, the same for every policy that names it, and across versions that add fields with
    defaults (only the fields set otherwise count; the kind always)."""
    return json.dumps({"kind": target.kind, **target.model_dump(mode="json", exclude_defaults=True)}, sort_keys=True)


def _note_target_change(db: sqlite3.Connection, target: ScalingTarget, policy: str, at: datetime | None) -> None:
    """Keep the target's last change past the policy that made it: a later change takes the row over, keeping the
    one it replaced (for `_take_back_target_change`)."""
    key = _target_key(target)
    row = db.execute("SELECT at, policy FROM target_changes WHERE target = ?", (key,)).fetchone()
    if at is not None and (row is None or at.timestamp() > row[0]):
        db.execute("INSERT OR REPLACE INTO target_changes VALUES (?, ?, ?, ?, ?)",
                   (key, at.timestamp(), policy, *(row or (None, None))))


def _take_back_target_change(db: sqlite3.Connection, event: ScalingEvent) -> None:
    """The target's change by `event` never happened (its write failed, the policy's state before it restored): the
    change it replaced is the target's last again."""
    key = _target_key(event.target)
    row = db.execute("SELECT prior_at, prior_policy FROM target_changes WHERE target = ? AND policy = ? AND at = ?",
                     (key, event.policy, event.at.timestamp())).fetchone()
    if row is None:  # a later change took the row over meanwhile: it stands
        return
    if row[0] is None:
        db.execute("DELETE FROM target_changes WHERE target = ?", (key,))
    else:
        db.execute("UPDATE target_changes SET at = ?, policy = ?, prior_at = NULL, prior_policy = NULL "
                   "WHERE target = ?", (row[0], row[1], key))


def _targets(body: str, target: ScalingTarget) -> bool:
    """Whether the stored policy `body` scales `target` (a body whose target cannot be read does not)."""
    try:
        return _TARGET.validate_python(json.loads(body).get("target")) == target
    except (ValueError, AttributeError):  # ValidationError included
        return False


def _policy_state(body: dict) -> PolicyState:
    """A stored policy state, keys this version does not know (a newer version's, after a rollback) left out."""
    return PolicyState.model_validate({key: value for key, value in body.items() if key in PolicyState.model_fields})


def _drop_intent(db: sqlite3.Connection, name: str, event_id: int | None = None) -> None:
    """Drop the policy's intent row and the state kept with it (only those of `event_id`, when given)."""
    for table in ("intents", "intent_prior"):
        if event_id is None:
            db.execute(f"DELETE FROM {table} WHERE name = ?", (name,))  # noqa: S608 - one of two fixed names
        else:
            db.execute(f"DELETE FROM {table} WHERE name = ? AND event_id = ?", (name, event_id))  # noqa: S608


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None



def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Add `_ADDED_COLUMNS` a file written by an older version lacks (its `intent_prior` had no `recorded_at`:
    every intent write then failed, and no enforced change was ever actuated again)."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, kind in columns.items():
            if column not in present:
                try:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process opening the file added it just now
                    if "duplicate column" not in str(exc):
                        raise

class ControllerState:
    """Policies, per-policy state, events, intents and the lease in one SQLite file (thread-safe).

    `max_replicas_cap` applies when stored policies are read and when the API writes one; `max_policies` when the
    API adds one.
    """

    def __init__(self, path: str | Path, *, max_replicas_cap: int = DEFAULT_MAX_REPLICAS_CAP,
                 max_policies: int = DEFAULT_MAX_POLICIES, max_events: int = DEFAULT_MAX_EVENTS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_policies, self.max_events, self.max_replicas_cap = max_policies, max_events, max_replicas_cap
        self._context = policy_context(max_replicas_cap)
        self._lock = threading.Lock()
        self._started_afresh: datetime | None = None  # when a damaged file was set aside for this one
        self._afresh_at: datetime | None = None  # a file set aside now: the new one is to keep when
        self._damage: sqlite3.DatabaseError | None = None  # damage SQLite reported since the file was opened
        self._checked_in_full: tuple[float, object] | None = None  # (monotonic time, file) of a full check passed
        self._monotonic = time.monotonic
        self._skewed_holders: set[str] = set()  # holders whose lease was found too far ahead (warned once)
        self._seeded: list[ScalingPolicy] = []  # the config file's policies, seeded again into a new file
        self._reseed = False  # a new file is open whose seeding has not succeeded yet
        self._db = self._connect()
        self._connected = True  # False while a reopen has failed: the connection is closed

    def _connect(self, thorough: bool = False) -> sqlite3.Connection:
        """The file opened; one SQLite's check finds damaged (`thorough`: its full integrity check, after SQLite
        reported damage while the file was used) is set aside for a new one, which keeps when that was
        (`started_afresh`), unless another controller sharing the file replaced it meanwhile (its new file is opened).
        Controllers sharing the file do this one at a time (`_one_at_a_time`): none opens, and so creates, a file
        while another moves the damaged one and its WAL aside."""
        with _one_at_a_time(self.path):
            before = _file_id(self.path)  # taken before the open: a file replaced during it is followed next call
            try:
                db = self._open(thorough)
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc):  # a file it may not open, a full disk, a lock: the file itself may be whole
                    raise
                if _file_id(self.path) == before:  # still the file found damaged (set aside by nobody else)
                    self._set_aside(exc)
                before = None  # the new file: known once opened
                db = self._open()
            try:
                if self._afresh_at is not None:  # kept until a new file holds it (its open may fail the first time)
                    db.execute("INSERT OR REPLACE INTO started_afresh VALUES (0, ?)", (self._afresh_at.isoformat(),))
                    self._afresh_at = None
                row = db.execute("SELECT at FROM started_afresh").fetchone()
            except BaseException:
                db.close()
                raise
            self._opened = before or _file_id(self.path)  # None before: a file this open created
        self._started_afresh = _time(row[0]) if row else None
        return db

    def _read_started_afresh(self) -> None:
        """When the open file was started afresh: read at every `follow_file`, since the controller that started
        it may mark it after this one opened it."""
        if self._started_afresh is None:
            row = self._db.execute("SELECT at FROM started_afresh").fetchone()
            self._started_afresh = _time(row[0]) if row else None

    def _open(self, thorough: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        check = "PRAGMA integrity_check(1)" if thorough else "PRAGMA quick_check(1)"
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed intent or cooldown survives a power loss too
            db.executescript(_SCHEMA)
            if (result := db.execute(check).fetchone()[0]) != "ok":
                raise _Damaged(result)
            _add_missing_columns(db)  # once the file is known sound: never a write into damage
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, problem: sqlite3.DatabaseError) -> None:
        """Move a damaged state file (and its WAL) aside for a new one: the policies of the config file are seeded
        again, the API's are lost (logged, with where the old file went), and every policy's cooldown starts now
        (the lost history may hold a change just made), kept in the new file (`started_afresh`)."""
        stamp = datetime.now(UTC)
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp:%Y%m%dT%H%M%S%fZ}")
        for suffix in ("", "-wal", "-shm"):
            if (part := Path(f"{self.path}{suffix}")).exists():
                part.replace(f"{aside}{suffix}")
        self._afresh_at = stamp
        logger.error("scaling controller state: %s cannot be read (%s); moved to %s and started afresh: the config "
                     "file's policies are seeded again, policies made through the API are lost, and every cooldown "
                     "starts now", self.path, problem, aside)

    def follow_file(self, now: datetime) -> bool:
        """Open the state file again when SQLite reported it damaged since it was opened (every later tick would
        fail on it; its full integrity check decides whether it is set aside for a new one, as at open), when the
        file at its path is another one or none (another controller sharing it set it aside: this one would go on
        alone in the old file, its lease there too; or an operator replaced or deleted it), or when an earlier reopen
        failed; seed the config file's policies into a new file (tried again at each call until it succeeds). True
        when a file was opened again: what the caller kept there must be written again."""
        with self._lock:
            replaced = _file_id(self.path) != self._opened  # moved aside or deleted: its successor is opened
            reopened = replaced or self._damage is not None or not self._connected
            if reopened:
                thorough = self._damage is not None and not replaced and self._may_check_in_full()
                checked = self._opened
                self._db.close()  # until a file opens, every call fails on the closed connection; tried next call
                self._connected = False
                self._db = self._connect(thorough=thorough)
                if thorough and self._opened == checked:  # found whole (a damaged one was set aside for a new one)
                    self._checked_in_full = self._monotonic(), checked
                self._damage, self._reseed, self._connected = None, True, True
            with contextlib.suppress(sqlite3.Error), self._noting_damage():  # the tick meets it itself
                self._read_started_afresh()
        if self._reseed:
            try:  # never pruned: a new file another controller set up holds its config's policies too
                self.seed(self._seeded, now, prune=False)
                self._reseed = False
            except Exception:  # noqa: BLE001 - the tick goes on; seeded at the next call
                logger.exception("scaling controller state: the config file's policies could not be seeded into %s",
                                 self.path)
        return reopened

    def _may_check_in_full(self) -> bool:
        """Whether SQLite's full check (which reads every page, under the lock) may run on the open file now: not
        again within FULL_CHECK_EVERY_S of one that found this file whole, as SQLite reports the same damage at every
        tick until something rewrites the page; the quick check still runs at the reopen."""
        if self._checked_in_full is None:
            return True
        at, checked = self._checked_in_full
        if checked != self._opened or self._monotonic() - at >= FULL_CHECK_EVERY_S:
            return True
        logger.warning("scaling controller state: SQLite reported %s damaged again within %.0f s of a full check that "
                       "found it whole; opened again with the quick check only", self.path, FULL_CHECK_EVERY_S)
        return False

    @contextmanager
    def _noting_damage(self) -> Iterator[None]:
        """Note SQLite's report of damage (`follow_file` acts on it); the error goes on."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _damaged(exc):
                self._damage = exc
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back when the block or its commit raises (a commit that fails on a full
        disk or a busy file may leave the transaction open, and every later write would then fail)."""
        with self._lock, self._noting_damage():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock, self._noting_damage():
            return self._db.execute(sql, params).fetchall()

    # --- policies ----------------------------------------------------------------------------------------

    def _parse(self, name: str, body: str, updated_at: str) -> ScalingPolicy | InvalidStoredPolicy:
        try:
            return ScalingPolicy.model_validate_json(body, context=self._context)
        except ValidationError as exc:
            reason = format_errors(None, exc)[:_MAX_REASON_CHARS]
        return InvalidStoredPolicy(name=name, reason=reason, updated_at=_time(updated_at))

    def stored_policies(self) -> StoredPolicies:
        """Every stored policy by name, those that no longer validate apart (with the reason)."""
        parsed = [self._parse(*row) for row in self._read("SELECT name, body, updated_at FROM policies ORDER BY name")]
        return StoredPolicies(policies=[p for p in parsed if isinstance(p, ScalingPolicy)],
                              invalid=[p for p in parsed if isinstance(p, InvalidStoredPolicy)])

    def policies(self) -> list[ScalingPolicy]:
        """The stored policies that validate, by name."""
        return self.stored_policies().policies

    def invalid_policies(self) -> list[InvalidStoredPolicy]:
        """The stored policies that no longer validate, by name, with the reason."""
        return self.stored_policies().invalid

    def policy(self, name: str) -> ScalingPolicy | None:
        """The policy called `name`; None when there is none or it no longer validates."""
        stored = self.stored_policy(name)
        return stored if isinstance(stored, ScalingPolicy) else None

    def stored_policy(self, name: str) -> ScalingPolicy | InvalidStoredPolicy | None:
        """The policy called `name` as stored, or why it no longer validates; None when there is none."""
        rows = self._read("SELECT name, body, updated_at FROM policies WHERE name = ?", (name,))
        return self._parse(*rows[0]) if rows else None

    def _policy_within_any_cap(self, name: str) -> ScalingPolicy | None:
        """The policy called `name` as stored, read without `max_replicas_cap` (what a seeded one's digest was made
        of); None when there is none or it does not validate even so."""
        rows = self._read("SELECT body FROM policies WHERE name = ?", (name,))
        try:
            return ScalingPolicy.model_validate_json(rows[0][0]) if rows else None
        except ValidationError:
            return None

    def put_policy(self, policy: ScalingPolicy, now: datetime, *, limited: bool = True,
                   expected: str | None = None) -> bool:
        """Create or replace by name; True when it was created. A replaced policy keeps its cooldown clock, unless
        it now scales another target: then its state (cooldown clock, count, recommendations) is dropped, and an
        actuation left pending on the old target is completed as abandoned (its event keeps the old target; a
        tick still carrying it out records its outcome there, not in the new target's state).

        Raises TooManyPolicies when `limited` and a new policy would exceed `max_policies`, OverReplicasCap when
        `limited` and its `max_replicas` exceeds `max_replicas_cap` (stored, it would be skipped as invalid), and
        PolicyChanged when `expected` (a `policy_tag`, or "*": any) does not match the stored policy, checked in the
        write's own transaction.
        """
        if limited and policy.max_replicas > self.max_replicas_cap:
            raise OverReplicasCap(f"max_replicas ({policy.max_replicas}) exceeds the controller's "
                                  f"auto_scaling.max_replicas_cap ({self.max_replicas_cap}); give one within it")
        with self._write() as db:
            stored = db.execute("SELECT body FROM policies WHERE name = ?", (policy.name,)).fetchone()
            created = stored is None
            if expected is not None and (created or expected not in ("*", _stored_tag(stored[0]))):
                raise PolicyChanged(f"policy {policy.name!r} " + ("does not exist" if created else "changed since "
                                    "the version you sent in If-Match") + ": read it again (GET), then send your "
                                    "change with its ETag")
            if stored is not None and not _targets(stored[0], policy.target):
                self._forget_target(db, policy.name)
            if created and limited:
                (count,) = db.execute("SELECT COUNT(*) FROM policies").fetchone()
                if count >= self.max_policies:
                    raise TooManyPolicies(f"the controller already holds {count} policies "
                                          f"(auto_scaling.max_policies {self.max_policies}): delete one first")
            db.execute("INSERT OR REPLACE INTO policies VALUES (?, ?, ?)",
                       (policy.name, policy.model_dump_json(), now.isoformat()))
        return created

    def _forget_target(self, db: sqlite3.Connection, name: str, why: str = "re-pointed to another target") -> None:
        """Drop a policy's state and intent (re-pointed, or deleted); the intent's pending event says it was
        abandoned, unless the tick that actuates it completes it first."""
        self._abandon(db, name, f"the policy was {why}")
        db.execute("DELETE FROM policy_state WHERE name = ?", (name,))
        db.execute("DELETE FROM bound_tracking WHERE policy = ?", (name,))

    def abandon_intent(self, name: str, why: str) -> ScalingEvent | None:
        """Complete the policy's pending event as abandoned (`why`: what left it unconfirmed) and drop its intent,
        keeping its state (the cooldown clock it started holds); the event, or None when none was pending."""
        if self.pending_intent(name) is None:  # the usual case: no write transaction
            return None
        with self._write() as db:
            return self._abandon(db, name, why)

    def _abandon(self, db: sqlite3.Connection, name: str, why: str) -> ScalingEvent | None:
        if (pending := self._pending(db, name)) is not None:
            detail = (f"abandoned: {why} before this change was confirmed (whether it landed on this target is not "
                      "known)")
            pending = pending.model_copy(update={"actuation": ActuationResult(status=ActuationStatus.FAILED,
                                                                              detail=detail)})
            db.execute("UPDATE events SET body = ? WHERE id = ?", (pending.model_dump_json(), pending.id))
        _drop_intent(db, name)
        return pending

    def delete_policy(self, name: str) -> bool:
        """Remove a policy, valid or not, and its state (its events stay; a pending one says it was abandoned);
        False when there was none."""
        with self._write() as db:
            deleted = db.execute("DELETE FROM policies WHERE name = ?", (name,)).rowcount > 0
            self._forget_target(db, name, "deleted")
        return deleted

    def seed(self, policies: list[ScalingPolicy], now: datetime, *, prune: bool = True) -> list[str]:
        """Apply config-file policies whose content changed since they were last seeded; returns their names. One
        seeded before and no longer in the file is deleted (`prune`: at start, when the operator's file was read),
        unless the API changed it since (then it is the API's).

        The config file is the operator's: `max_policies` does not refuse its policies (its count is checked
        when the file is read)."""
        self._seeded = list(policies)
        listed = {policy.name for policy in policies}
        for name, digest in self._read("SELECT name, digest FROM seeded") if prune else []:
            if name not in listed:
                stored = self._policy_within_any_cap(name)  # one now over a lowered cap is pruned the same way
                if stored is not None and digest in (_digest(stored), _digest_until_2026_12(stored)):
                    self.delete_policy(name)  # not changed through the API since it was seeded
                with self._write() as db:
                    db.execute("DELETE FROM seeded WHERE name = ?", (name,))
        applied = []
        for policy in policies:
            digest = _digest(policy)
            row = self._read("SELECT digest FROM seeded WHERE name = ?", (policy.name,))
            if row and row[0][0] in (digest, _digest_until_2026_12(policy)):
                if row[0][0] != digest:  # the same file, seeded by an earlier version: the digest's new form
                    with self._write() as db:
                        db.execute("UPDATE seeded SET digest = ? WHERE name = ?", (digest, policy.name))
                continue
            self.put_policy(policy, now, limited=False)
            with self._write() as db:
                db.execute("INSERT OR REPLACE INTO seeded VALUES (?, ?)", (policy.name, digest))
            applied.append(policy.name)
        return applied

    # --- per-policy state --------------------------------------------------------------------------------

    def policy_state(self, name: str) -> PolicyState:
        """The policy's state as stored; keys this version does not know (a newer version's, after a rollback) are
        left out, and a row that cannot be read at all starts afresh as if the policy had changed its target just
        now (its cooldown holds it, the side of caution: the lost history may hold a change just made), logged:
        either would otherwise fail every tick of every policy on its target, since nothing rewrites the row. After a
        damaged file was set aside, a policy without a stored state holds its cooldown from then; it is not given a
        change of its target then (`changed_target_at`): kept with its state, that made a policy deleted and created
        again since its last change look like the one that made it, and not held for it (TickCounts)."""
        rows = self._read("SELECT body FROM policy_state WHERE name = ?", (name,))
        if not rows:
            return PolicyState(last_scale_at=self._started_afresh)
        try:
            return _policy_state(json.loads(rows[0][0]))
        except (ValueError, TypeError, AttributeError) as exc:  # ValidationError is a ValueError
            logger.warning("policy %s: its stored state cannot be read, so it starts afresh, its cooldown from now: %s",
                           name, exc)
            return PolicyState(last_scale_at=datetime.now(UTC))

    def target_change(self, target: ScalingTarget) -> tuple[datetime, str] | None:
        """When the target was last changed, and by which policy: kept past that policy (deleted, renamed or
        re-pointed), so a policy that takes the target over holds for it (TickCounts)."""
        rows = self._read("SELECT at, policy FROM target_changes WHERE target = ?", (_target_key(target),))
        return (datetime.fromtimestamp(rows[0][0], UTC), rows[0][1]) if rows else None

    # --- events and intents ------------------------------------------------------------------------------

    @staticmethod
    def _save_state(db: sqlite3.Connection, event: ScalingEvent | ScalingPolicy, state: PolicyState) -> None:
        """Store the state of the event's policy (or the policy's), unless the policy was deleted or re-pointed at
        another target meanwhile (the state is that of the event's target)."""
        name = event.policy if isinstance(event, ScalingEvent) else event.name
        stored = db.execute("SELECT body FROM policies WHERE name = ?", (name,)).fetchone()
        if stored is not None and _targets(stored[0], event.target):
            db.execute("INSERT OR REPLACE INTO policy_state VALUES (?, ?)", (name, state.model_dump_json()))
        _note_target_change(db, event.target, name, state.changed_target_at)

    def remember(self, policy: ScalingPolicy, state: PolicyState, *, holder: str) -> None:
        """Store a policy's state without an event (its hold was recorded already), while the lease row names
        `holder`."""
        with self._write() as db:
            if self._named(db, holder, f"the state of policy {policy.name}"):
                self._save_state(db, policy, state)

    def _insert(self, db: sqlite3.Connection, event: ScalingEvent) -> ScalingEvent:
        cursor = db.execute("INSERT INTO events (at, policy, body) VALUES (?, ?, '')", (event.at.timestamp(),
                                                                                        event.policy))
        stored = event.model_copy(update={"id": cursor.lastrowid})
        db.execute("UPDATE events SET body = ? WHERE id = ?", (stored.model_dump_json(), stored.id))
        if stored.id % 1000 == 0:  # keep the newest max_events, and every event an intent still waits on
            db.execute("DELETE FROM events WHERE id <= ? AND id NOT IN (SELECT event_id FROM intents)",
                       (stored.id - self.max_events,))
        return stored

    def record(self, event: ScalingEvent, state: PolicyState | None = None, *,
               holder: str | None = None) -> ScalingEvent:
        """Store an event (and the policy's new state, in the same transaction, while the lease row names `holder`,
        required with a state); returns it with its id."""
        if state is not None and holder is None:
            raise ValueError("a policy's state is written by the lease holder it names: pass holder")
        with self._write() as db:
            stored = self._insert(db, event)
            if state is not None and self._named(db, holder, f"the state of policy {event.policy}"):
                self._save_state(db, stored, state)
        return stored

    def record_intent(self, event: ScalingEvent, state: PolicyState, policy: ScalingPolicy, holder: str,
                      now: datetime, ttl_s: float, *, prior: PolicyState) -> ScalingEvent:
        """Store a pending actuation in one transaction: its event, the state with the cooldown started, the
        intent, and the state `prior` to it (restored when the write is found never to have landed) with the time
        `now` it is recorded at (the actuation follows). Only while the lease is `holder`'s and the stored policy is
        still `policy` (the one the tick decided on: not deleted, not replaced by another target or mode); else
        IntentRefused.

        The lease is renewed for `ttl_s` with it, even when it expired during a long tick, as long as no other
        controller took it meanwhile (the row still names `holder`); one released or taken over refuses."""
        with self._write() as db:
            lease = self._lease(db)
            if lease is None or lease.holder != holder:
                raise IntentRefused(f"the lease is held by {lease.holder if lease else 'nobody'}")
            self._hold_lease(db, holder, now, ttl_s)
            row = db.execute("SELECT name, body, updated_at FROM policies WHERE name = ?", (policy.name,)).fetchone()
            if row is None:
                raise IntentRefused("the policy was deleted during the tick")
            if self._parse(*row) != policy:
                raise IntentRefused("the policy was replaced during the tick (the next tick decides on the new one)")
            stored = self._insert(db, event)
            self._save_state(db, event, state)
            db.execute("INSERT OR REPLACE INTO intents VALUES (?, ?)", (event.policy, stored.id))
            db.execute("INSERT OR REPLACE INTO intent_prior VALUES (?, ?, ?, ?)",
                       (event.policy, stored.id, prior.model_dump_json(), now.timestamp()))
        return stored

    def complete(self, event: ScalingEvent, state: PolicyState, *, holder: str) -> ScalingEvent:
        """Replace a pending event by its outcome, store the policy's state and drop the intent, at once, while the
        lease row names `holder`; returns the event as stored. Otherwise, while the intent stands, it and the state
        before it stay for the lease holder to judge on the target's count (a change that never landed restores that
        state, so a refused write leaves no cooldown behind, where dropping the intent left the cooldown it started),
        and the event stays pending, the answer in its detail, until then; an intent the holder judged already gets
        the answer as its outcome."""
        with self._write() as db:
            if self._named(db, holder, f"the state of policy {event.policy}"):
                self._save_state(db, event, state)
                undone = state.changed_target_at is None or state.changed_target_at < event.at
                if event.actuation.status is ActuationStatus.FAILED and undone:  # its state before it restored
                    _take_back_target_change(db, event)
                _drop_intent(db, event.policy, event.id)
            elif db.execute("SELECT 1 FROM intents WHERE name = ? AND event_id = ?",
                            (event.policy, event.id)).fetchone() is not None:
                answer = f"{event.actuation.status.value}: {event.actuation.detail}".rstrip(": ")
                event = event.model_copy(update={"actuation": event.actuation.model_copy(update={
                    "status": ActuationStatus.PENDING,
                    "detail": f"answered {answer} after the lease passed to another controller, which judges it on "
                              "the target's count"})})
            db.execute("UPDATE events SET body = ? WHERE id = ?", (event.model_dump_json(), event.id))
        return event

    def note_pending(self, event: ScalingEvent) -> bool:
        """Rewrite a pending event's body (why it is still pending, say) while its intent stands, for a later tick to
        judge; False where it no longer does (abandoned meanwhile: its policy deleted or re-pointed)."""
        with self._write() as db:
            return db.execute("UPDATE events SET body = ? WHERE id = ? AND id IN (SELECT event_id FROM intents WHERE "
                              "name = ?)", (event.model_dump_json(), event.id, event.policy)).rowcount > 0

    def pending_intent(self, name: str) -> ScalingEvent | None:
        """The policy's actuation that was recorded and never completed (a crash or a failed write), if any."""
        with self._lock, self._noting_damage():
            return self._pending(self._db, name)

    def intent_record(self, pending: ScalingEvent) -> IntentRecord | None:
        """When the pending event's intent was recorded, and the policy's state before it; None when not known (an
        intent recorded by a version that kept none, or a row this version cannot read)."""
        rows = self._read("SELECT body, recorded_at FROM intent_prior WHERE name = ? AND event_id = ?",
                          (pending.policy, pending.id))
        if not rows:
            return None
        try:
            return IntentRecord(prior=_policy_state(json.loads(rows[0][0])),
                                recorded_at=datetime.fromtimestamp(rows[0][1], UTC))
        except (ValueError, TypeError, AttributeError, OverflowError, OSError):  # another version's form
            return None

    @staticmethod
    def _pending(db: sqlite3.Connection, name: str) -> ScalingEvent | None:
        """The pending event; None also when its stored body no longer validates (written by another version): its
        intent is dropped and the event marked failed in place, as it cannot be completed (the cooldown it started
        holds all the same), and logged, never an error that would fail every tick of the policy and its deletion."""
        row = db.execute("SELECT e.id, e.body FROM intents i JOIN events e ON e.id = i.event_id WHERE i.name = ?",
                         (name,)).fetchone()
        if row is None:
            return None
        try:
            return ScalingEvent.model_validate_json(row[1])
        except ValidationError as exc:
            logger.warning("scaling controller: the pending event %s of policy %s no longer validates, so its intent "
                           "is dropped and the event marked failed: %s", row[0], name,
                           " ".join(format_errors(None, exc).splitlines()))
            db.execute("UPDATE events SET body = json_set(body, '$.actuation.status', ?, '$.actuation.detail', ?) "
                       "WHERE id = ? AND json_valid(body)", (ActuationStatus.FAILED.value, _UNREADABLE_PENDING, row[0]))
            _drop_intent(db, name, row[0])
            return None

    def events(self, policy: str | None = None, since: datetime | None = None, limit: int = 100) -> list[ScalingEvent]:
        """Events newest first, optionally of one policy and at or after `since` (`events_page`'s first page)."""
        return self.events_page(policy, since, limit)[0]

    def events_page(self, policy: str | None, since: datetime | None, limit: int,
                    before_id: int | None = None) -> tuple[list[ScalingEvent], int | None]:
        """Up to `limit` events newest first, optionally of one policy, at or after `since`, and older than event
        `before_id` (none once that event is gone, with all older ones), and the id the next page goes on from (None:
        no older event matches). A stored event that no longer validates (written by an older version) is left out
        and logged, never an error for the whole list, and never the end of the pages."""
        clauses: list[str] = []
        params: list[object] = []
        if before_id is not None:  # in the listing's own order: (at, id) after the cursor's
            clauses.append("(at, id) < (SELECT at, id FROM events WHERE id = ?)")
            params.append(before_id)
        if policy is not None:
            clauses.append("policy = ?")
            params.append(policy)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since.timestamp())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT id, body FROM events {where} ORDER BY at DESC, id DESC LIMIT ?",
                          (*params, limit + 1))
        more, rows = len(rows) > limit, rows[:limit]
        events = []
        for event_id, body in rows:
            try:
                events.append(ScalingEvent.model_validate_json(body))
            except ValidationError as exc:
                logger.warning("scaling controller: stored event %s no longer validates, left out: %s", event_id,
                               " ".join(format_errors(None, exc).splitlines()))
        return events, (rows[-1][0] if more else None)

    # --- the lease ---------------------------------------------------------------------------------------

    @staticmethod
    def _lease(db: sqlite3.Connection) -> Lease | None:
        row = db.execute("SELECT holder, expires_at FROM lease WHERE id = 0").fetchone()
        if row is None:
            return None
        try:
            expires_at = datetime.fromtimestamp(row[1], UTC)
        except (TypeError, ValueError, ArithmeticError, OSError):  # edited by hand: past any clock (shortened)
            expires_at = datetime.max.replace(tzinfo=UTC)
        return Lease(holder=row[0], expires_at=expires_at)

    @classmethod
    def _named(cls, db: sqlite3.Connection, holder: str, what: str) -> bool:
        """Whether the lease row names `holder` (expired or not: no one took it over), so it may write `what`."""
        lease = cls._lease(db)
        if lease is not None and lease.holder == holder:
            return True
        logger.warning("scaling controller %s: %s not written: the lease is %s's now", holder, what,
                       lease.holder if lease else "nobody")
        return False

    @staticmethod
    def _hold_lease(db: sqlite3.Connection, holder: str, now: datetime, ttl_s: float) -> Lease:
        lease = Lease(holder=holder, expires_at=now + timedelta(seconds=ttl_s))
        db.execute("INSERT OR REPLACE INTO lease VALUES (0, ?, ?)", (holder, lease.expires_at.timestamp()))
        return lease

    def acquire_lease(self, holder: str, now: datetime, ttl_s: float) -> Lease:
        """Take or renew the lease for `ttl_s` when it is free, expired or `holder`'s; returns the lease now.

        Another's lease that runs more than two terms past `now` (its holder's clock is ahead of this one by more
        than a term, or the row was edited) is shortened to two terms from `now`: a holder that stops renewing is
        then taken over two terms later by this clock, not after the skew as well. The second term leaves room for
        `now` being read before the tick's slower steps, so a lease just renewed on a clock like this one is never
        shortened; a live holder renews it at every tick, and keeps it."""
        most = now + timedelta(seconds=SKEWED_LEASE_TERMS * ttl_s)
        with self._write() as db:
            lease = self._lease(db)
            if lease is None or lease.holder == holder or lease.expires_at <= now:
                lease = self._hold_lease(db, holder, now, ttl_s)
            elif lease.expires_at > most:
                if lease.holder not in self._skewed_holders:  # once per holder: it renews at every tick
                    self._skewed_holders.add(lease.holder)
                    logger.warning("scaling controller %s: the lease of %s runs to %s, more than %d terms ahead of "
                                   "this clock: shortened to that (are the two clocks apart?)", holder, lease.holder,
                                   lease.expires_at.isoformat(), SKEWED_LEASE_TERMS)
                lease = self._hold_lease(db, lease.holder, now, SKEWED_LEASE_TERMS * ttl_s)
        return lease

    def release_lease(self, holder: str) -> None:
        """Give the lease up (when `holder` has it), so another controller need not wait for it to expire."""
        with self._write() as db:
            db.execute("DELETE FROM lease WHERE holder = ?", (holder,))

    # --- nodes whose forecasts are not trusted (autoscaler/live_accuracy.py) ---------------------------------

    def fallen(self) -> dict[tuple[str, str], datetime]:
        """(model version, node) -> since when the node's live coverage keeps it on measured power (a row that is no
        time, edited by hand, is left out)."""
        fallen = {}
        for version, node, since in self._read("SELECT version, node, since FROM live_fallback"):
            try:
                fallen[(version, node)] = datetime.fromtimestamp(since, UTC)
            except (TypeError, ValueError, ArithmeticError, OSError):
                logger.warning("scaling controller state: the live-accuracy fallback of %s on %s is unreadable", node,
                               version)
        return fallen

    def save_fallen(self, fallen: Mapping[tuple[str, str], datetime], holder: str) -> bool:
        """Replace the stored set (a restarted controller keeps distrusting them until the evidence says otherwise)
        while the lease row names `holder`; whether it did."""
        with self._write() as db:
            if not self._named(db, holder, "the nodes in live-accuracy fallback"):
                return False
            db.execute("DELETE FROM live_fallback")
            db.executemany("INSERT INTO live_fallback VALUES (?, ?, ?)",
                           [(version, node, since.timestamp()) for (version, node), since in fallen.items()])
        return True

    def bound_trackers(self) -> dict[str, SavedBound]:
        """Policy name -> its peak bound's online correction, as the last lease holder left it."""
        saved = {}
        for policy, meaning, log_factor, windows, misses in self._read(
                "SELECT policy, meaning, log_factor, windows, misses FROM bound_tracking"):
            try:
                saved[policy] = SavedBound(str(meaning), float(log_factor), int(windows), int(misses))
            except (TypeError, ValueError, ArithmeticError):  # a row edited by hand: that policy starts afresh
                logger.warning("scaling controller state: the saved peak bound correction of %s is unreadable",
                               policy)
        return saved

    def save_bound_trackers(self, saved: Mapping[str, SavedBound], holder: str) -> bool:
        """Replace the stored corrections (a restarted controller goes on from them) while the lease row names
        `holder`; whether it did."""
        with self._write() as db:
            if not self._named(db, holder, "the peak bound corrections"):
                return False
            db.execute("DELETE FROM bound_tracking")
            db.executemany("INSERT INTO bound_tracking VALUES (?, ?, ?, ?, ?)",
                           [(name, bound.meaning, bound.log_factor, bound.windows, bound.misses)
                            for name, bound in saved.items()])
        return True
