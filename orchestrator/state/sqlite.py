"""The SQLite state store (the only sqlite3 import): append-only events plus derived run/phase rows.

Writes go through one writer thread that commits every event queued while the
previous commit was in flight in one ``BEGIN IMMEDIATE`` transaction (group
commit); ``record`` returns once its event's transaction is durable (WAL,
``synchronous=FULL``). Derived rows change in the same transaction as their
event, so the write-ahead order of reliability.md holds: ``phase_started`` is on
disk before the agent runs, and ``phase_completed`` lands with its output at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import RunLocked, RunNotFound, StateCorrupted, StateError, UsageError
from ..events import Event, durable
from ..files import folder_problem
from .base import CachedResult, Decision, Owner, PhaseRecord, RunRecord, current_owner
from .rows import (
    LIVE,
    OUTPUT_CAP,
    PHASES,
    RUNNING,
    Plans,
    apply_event,
    apply_events,
    corrupt_run_record,
    dumps,
    event_record,
    phase_record,
    run_record,
)

__all__ = [
    "DEFAULT_STATE_DIR",
    "OUTPUT_CAP",
    "SCHEMA_VERSION",
    "SqliteStore",
    "check_state_folder",
    "open_store",
    "resolve_state_dir",
]

# 2: decisions (approvals); 3: schedule_fires, cancel_requests (serve); 4: a running phase
# has no row (rows.RUNNING reads it from its phase_started: an older orch would not)
SCHEMA_VERSION = 4
DEFAULT_STATE_DIR = ".orch"
_BUSY_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    path TEXT NOT NULL,
    source_hash TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    owner_pid INTEGER,
    owner_start TEXT,
    resumes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    outputs TEXT,
    counts TEXT,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
CREATE TABLE IF NOT EXISTS phases (
    run_id TEXT NOT NULL,
    id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    output TEXT,
    output_file TEXT,
    error TEXT,
    cached INTEGER NOT NULL DEFAULT 0,
    fallback_used INTEGER NOT NULL DEFAULT 0,
    completed_seq INTEGER,
    compensated INTEGER,
    compensation_error TEXT,
    metadata TEXT,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    phase TEXT,
    attempt INTEGER,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS schedule_fires (
    workflow TEXT NOT NULL,
    entry TEXT NOT NULL,
    fire_time REAL NOT NULL,
    decided REAL NOT NULL,
    outcome TEXT NOT NULL,
    run_id TEXT,
    PRIMARY KEY (workflow, entry, fire_time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cancel_requests (
    run_id TEXT PRIMARY KEY,
    requested REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS decisions (
    run_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    approved INTEGER NOT NULL,
    who TEXT NOT NULL,
    at REAL NOT NULL,
    comment TEXT,
    PRIMARY KEY (run_id, phase)
) WITHOUT ROWID;
"""


def resolve_state_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: ``option``, else ``$ORCH_STATE_DIR``, else ``.orch``."""
    return Path(option or os.environ.get("ORCH_STATE_DIR") or DEFAULT_STATE_DIR)


def open_store(state_dir: str | os.PathLike[str] | None = None) -> SqliteStore:
    """Open (creating when missing) the store in ``state_dir`` (see resolve_state_dir).

    Raises StateError when the directory cannot be created or the database is
    unusable, StateCorrupted when the file is not a SQLite database.
    """
    return SqliteStore(resolve_state_dir(state_dir))


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: What orch keeps in a state folder: a folder holding nothing else is orch's own.
_OWN_ENTRIES = frozenset(
    {"state.db", "state.db-wal", "state.db-shm", "state.db-journal", ".setup.lock"}
    | {"logs", "outputs"}
)


#: PRAGMA application_id of a database the store created in a folder it did not create
#: (``--state-dir .``): that folder is never given a .gitignore, however little it holds.
_FOREIGN_FOLDER = 0x6F726368  # "orch"


def make_state_folder(folder: Path) -> None:
    """Create a state folder (and its parents); one this call created gets its .gitignore.

    Raises OSError when the folder cannot be created.
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if created:
        _write_gitignore(folder)


def check_state_folder(folder: Path) -> bool:
    """Whether the state folder ``folder`` holds a database; raise StateError where it
    cannot be a state folder: a file, a path through a file, a folder (or one above it)
    this user cannot open. The one check of every command: the store makes it, and so
    do the reading commands and ``orch run --dry-run``, which open no store where nothing
    is recorded."""
    problem = folder_problem(folder)
    if problem is not None:
        raise StateError(f"cannot use the state folder '{folder}': {problem}", hint=_FOLDER_HINT)
    return (folder / "state.db").exists()


_FOLDER_HINT = (
    "the state directory (--state-dir, ORCH_STATE_DIR) must be a directory this user can open"
)


def _own_entries_only(folder: Path) -> bool:
    """Whether ``folder`` holds something, and nothing but orch's own entries."""
    try:
        entries = set(os.listdir(folder))
    except OSError:
        return False
    return bool(entries) and entries <= _OWN_ENTRIES


def _write_gitignore(folder: Path) -> None:
    """Keep a state folder of orch's own out of git (as pytest and mypy do with their caches).

    Written by whoever creates the folder (the store, ``orch run --detach`` for its logs:
    ``make_state_folder``), and by the store for a folder an earlier orch left without it
    (holding nothing but orch's entries and a database not marked ``_FOREIGN_FOLDER``).
    ``--state-dir .`` must not hide a project: a folder that existed before its database
    (even an empty one) never gets one. Best effort: a file that exists already, or a failed
    write, is left alone.
    """
    try:
        fd = os.open(folder / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return
    with contextlib.suppress(OSError), os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Created by orch: run history, cached results and outputs stay out of git.\n*\n")


#: What the writer thread takes: (an event, or a cache row; the future settled at commit).
_Item = tuple[Any, "asyncio.Future[None] | None"]


class SqliteStore:
    """The durable store of runs, phases, events and cached results in ``state_dir/state.db``.

    ``record`` is the engine's async event sink. Readers may be called from any
    thread. Call ``close`` (or ``aclose``) when done: it waits for queued writes;
    ``with open_store(...) as store:`` closes it however the block ends.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "state.db"
        self.outputs_dir = self.state_dir / "outputs"
        self.owner = current_owner()
        crash = os.environ.get("ORCH_CRASH_AT", "").strip()
        # Test hook (reliability D2): die like kill -9 at the k-th write boundary.
        self._crash_at = int(crash) if crash.isdigit() else 0
        self._boundaries = 0
        self.commits = 0  # transactions committed by the writer thread (group commit metric)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lost: StateError | None = None  # a failed write that nobody awaited
        self._plans: Plans = {}  # the plans of the runs written here (rows.apply_events)
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        check_state_folder(self.state_dir)
        existed = self.state_dir.exists()
        try:
            make_state_folder(self.state_dir)
        except OSError as exc:
            raise StateError(
                f"cannot create the state directory '{self.state_dir}': "
                f"{(exc.strerror or str(exc)).lower()}"
            ) from exc
        # Listed before the database is made: a folder that held nothing is not orch's.
        left_without = existed and _own_entries_only(self.state_dir)
        # A folder (or database) this process cannot write is read as it is: the
        # reading commands work, every write is refused with one clear message.
        self.readonly = not _writable(self.state_dir, self.path)
        if self.readonly:
            if not self.path.exists():
                raise self._readonly_error("cannot record runs there")
            return
        # WAL mode and the schema are set up once per file, under a lock file: two
        # processes switching a new database to WAL at once get "database is locked"
        # at once (SQLite's deadlock rule skips the busy timeout there).
        try:
            with _setup_lock(self.state_dir / ".setup.lock"):
                conn = self._connect()
                try:
                    conn.execute("PRAGMA journal_mode=WAL")  # persistent: later connections too
                    self._init_schema(conn, foreign=existed)
                    if left_without:  # a folder an earlier orch left without its .gitignore
                        marked = conn.execute("PRAGMA application_id").fetchone()[0]
                        if marked != _FOREIGN_FOLDER:
                            _write_gitignore(self.state_dir)
                except sqlite3.DatabaseError as exc:
                    raise StateCorrupted(
                        f"the state database '{self.path}' cannot be opened: {exc}",
                        hint="move the file away to start a fresh history",
                    ) from exc
                finally:
                    conn.close()
        except OSError as exc:  # the lock file: permission denied, read-only file system
            raise StateError(
                f"cannot open the state folder '{self.state_dir}':"
                f" {(exc.strerror or str(exc)).lower()}",
                hint=_WRITABLE_HINT,
            ) from exc

    def _readonly_error(self, what: str) -> StateError:
        return StateError(
            f"the state folder '{self.state_dir}' is read-only: {what}", hint=_WRITABLE_HINT
        )

    def check_writable(self) -> None:
        """Raise StateError when this store is read-only (checked before a run starts)."""
        if self.readonly:
            raise self._readonly_error("cannot record runs there")

    # -- connections -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            return self._connect_readonly()
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            if conn is not None:  # a file that is no database: closed, not left to the GC
                conn.close()
            raise StateCorrupted(
                f"the state database '{self.path}' cannot be opened: {exc}",
                hint="move the file away to start a fresh history",
            ) from exc
        return conn

    def _connect_readonly(self) -> sqlite3.Connection:
        """A reader of a folder this process cannot write.

        ``mode=ro`` sees the -wal file's commits, but needs the -shm file to exist;
        without it (a cleanly closed store: everything is in the main file)
        ``immutable`` reads the file as it is.
        """
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro"
        for target in (uri, uri + "&immutable=1"):
            try:
                conn = sqlite3.connect(
                    target, uri=True, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error:
                continue
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError:
                conn.close()
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise StateCorrupted(
                    f"the state database '{self.path}' cannot be opened: {exc}"
                ) from exc
        raise self._readonly_error(f"the state database '{self.path}' cannot be read")

    def _init_schema(self, conn: sqlite3.Connection, *, foreign: bool) -> None:
        """Create (or upgrade) the schema; ``foreign``: the folder existed before this
        database (a new one is marked ``_FOREIGN_FOLDER``: never given a .gitignore)."""
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"the state database '{self.path}' has schema version {version}, newer than"
                    f" this orch understands ({SCHEMA_VERSION})",
                    hint="upgrade orch, or use another --state-dir",
                )
            if version == SCHEMA_VERSION:
                return
            # One script, one IMMEDIATE transaction: two processes creating it at once is safe.
            conn.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};"
                + (f"PRAGMA application_id={_FOREIGN_FOLDER};" if foreign and not version else "")
                + "COMMIT;"
            )
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateCorrupted(f"the state database '{self.path}' is unusable: {exc}") from exc

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """A fresh connection in one write transaction; sqlite errors become StateError(what)."""
        if self.readonly:
            raise self._readonly_error(what)
        conn = self._connect()
        try:
            with _immediate(conn):
                yield conn
        except sqlite3.Error as exc:
            raise StateError(f"{what}: {exc}") from exc
        finally:
            conn.close()

    def _read(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._reader_lock:
            return self._fetch(self._reading(), sql, args)

    def _reading(self) -> sqlite3.Connection:
        """The reader connection, opened on first use (the caller holds ``_reader_lock``)."""
        if self._reader is None:
            self._reader = self._connect()
        return self._reader

    def _fetch(
        self, conn: sqlite3.Connection, sql: str, args: Sequence[Any] | Mapping[str, Any]
    ) -> list[Any]:
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StateCorrupted(f"cannot read the state database '{self.path}': {exc}") from exc

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Callable[[str, Sequence[Any] | Mapping[str, Any]], list[Any]]]:
        """``_read`` for several reads of one snapshot of the database (one read
        transaction: a row written meanwhile is in all of them or in none)."""
        with self._reader_lock:
            conn = self._reading()
            self._fetch(conn, "BEGIN", ())
            try:
                yield lambda sql, args: self._fetch(conn, sql, args)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    # -- writing -----------------------------------------------------------------

    async def record(self, event: Event) -> None:
        """Store ``event`` and update the derived rows; return once it is committed.

        Every event is awaited (write-ahead: the engine shows an event to anyone
        only after this returns), and concurrent events share one commit (group
        commit in the writer thread). Raises StateError when the write failed
        (disk full, an output that cannot be stored, database unusable).
        """
        await self.submit(event)

    @durable
    def submit(self, event: Event) -> asyncio.Future[None]:
        """``record`` without a coroutine of its own (the engine's sink): queue ``event``,
        return a future that is settled once its transaction is committed (StateError
        when the write failed)."""
        if self._lost is not None:
            raise self._lost
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._writer is None:
            self._ensure_writer()
        self._queue.put((event, future))  # a tuple: no object of our own to make
        return future

    async def cache_put(
        self, key: str, output: Any, metadata: Mapping[str, Any], *, now: float, ttl: float | None
    ) -> None:
        """Remember ``output`` for ``key`` until ``now + ttl`` (forever when ttl is None).

        Queued like a completion: committed with the next batch.
        """
        expires = None if ttl is None else now + ttl
        self._enqueue((key, dumps(output), dumps(dict(metadata)), now, expires))

    def _enqueue(self, row: tuple[Any, ...]) -> None:
        if self._lost is not None:
            raise self._lost
        self._ensure_writer()
        self._queue.put((row, None))

    def append(self, events: Iterable[Event]) -> None:
        """Store events synchronously, in one transaction (for the CLI's own records)."""
        with self._writing(f"cannot write to the state database '{self.path}'") as conn:
            apply_events(conn, list(events), owner=self.owner, spill=self._spill, plans=self._plans)

    def end_interrupted(self, event: Event) -> None:
        """Record a final ``event`` for a run whose owner died, if it still has no live owner.

        One transaction reads the row and writes the event, so a resume that claimed
        the run in the meantime wins: then RunLocked is raised and nothing is written.
        """
        full_id = event.run_id
        with self._writing(f"cannot write to the state database '{self.path}'") as conn:
            row = conn.execute(
                "SELECT status, owner_pid, owner_start FROM runs WHERE id=?", (full_id,)
            ).fetchone()
            try:
                owner = Owner(int(row[1]), row[2]) if row is not None and row[1] else None
            except (TypeError, ValueError):
                owner = None  # an unreadable owner cannot be alive
            if row is None or row[0] != "running" or (owner is not None and owner.alive()):
                raise RunLocked(
                    f"run '{full_id}' is no longer interrupted (it was resumed or ended"
                    " meanwhile); nothing recorded",
                    hint=f"`orch status {full_id}` shows it now",
                )
            self._apply_event(conn, event)

    def _ensure_writer(self) -> None:
        if self.readonly:
            raise self._readonly_error("cannot record runs there")
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="orch-state", daemon=True)
            self._writer.start()

    def close(self) -> None:
        """Wait for queued writes, then release the connections."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    async def aclose(self) -> None:
        """``close`` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _boundary(self) -> None:
        self._boundaries += 1
        if self._crash_at and self._boundaries == self._crash_at:
            os._exit(137)

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                batch = [first]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is None for item in batch)
                items = [item for item in batch if item is not None]
                if items:
                    self._commit(conn, items)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, items: list[_Item]) -> None:
        error: BaseException | None = None
        try:
            self._transaction(conn, items)
        except Exception as exc:  # one bad item must not fail the others: retry one by one
            if len(items) == 1:
                error = exc
            else:
                for item in items:
                    self._commit(conn, [item])
                return
        if error is not None and items[0][1] is None and self._lost is None:
            # nobody awaits this write: fail the next record() instead of losing it silently
            self._lost = StateError(f"cannot write to the state database '{self.path}': {error}")
        # each future is settled in its own loop's thread (runs in several threads, each
        # with its own event loop, may share one store); a loop closed meanwhile has
        # nobody left waiting
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, future in items:
            if future is not None:
                by_loop.setdefault(future.get_loop(), []).append(future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(_settle, futures, error, str(self.path))

    def _transaction(self, conn: sqlite3.Connection, items: list[_Item]) -> None:
        cur = conn.cursor()  # one cursor for the batch: conn.execute makes one a statement
        with _immediate(conn):
            events = []
            for payload, _ in items:
                if isinstance(payload, Event):
                    events.append(payload)
                else:  # a cache row (cache_put)
                    cur.execute(
                        "INSERT OR REPLACE INTO cache(key, output, metadata, created, expires)"
                        " VALUES (?, ?, ?, ?, ?)",
                        payload,
                    )
            if events:
                apply_events(cur, events, owner=self.owner, spill=self._spill, plans=self._plans)
            self._boundary()  # written, not committed: a crash here loses the whole batch
        self.commits += 1
        self._boundary()  # committed, not yet acknowledged

    def _spill(self, run_id: str, phase: str, text: str) -> str:
        folder = self.outputs_dir / _safe_name(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{_safe_name(phase)}.json"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        return str(target.relative_to(self.state_dir))

    def _apply_event(self, conn: sqlite3.Connection, event: Event) -> None:
        apply_event(conn, event, owner=self.owner, spill=self._spill, plans=self._plans)

    # -- ownership ---------------------------------------------------------------

    def claim(self, run_id: str, *, rerun: Iterable[str] = ()) -> RunRecord:
        """Make this process the owner of a stopped run, to resume it.

        ``rerun`` names completed phases to run again (their rows go back to
        pending). Raises RunNotFound, and RunLocked when a live process owns it.
        """
        full_id = self.get_run(run_id).id
        # one IMMEDIATE transaction serialises two resumers of one run
        with self._writing(f"cannot claim run '{full_id}'") as conn:
            row = conn.execute(
                "SELECT status, owner_pid, owner_start FROM runs WHERE id=?", (full_id,)
            ).fetchone()
            owner = Owner(int(row[1] or 0), row[2])
            if row[0] == "running" and owner.pid != self.owner.pid and owner.alive():
                raise RunLocked(
                    f"run '{full_id}' is still running in process {owner.pid}",
                    hint=f"wait for it to end, or stop it with `orch cancel {full_id}`",
                )
            if row[0] == "completed":  # another resume finished it since it was read
                raise RunLocked(f"run '{full_id}' has completed meanwhile; nothing to resume")
            conn.execute(
                "UPDATE runs SET status='running', ended=NULL, owner_pid=?, owner_start=?"
                " WHERE id=?",
                (self.owner.pid, self.owner.start, full_id),
            )
            # a cancel asked of the dead owner is not one for this resume
            conn.execute("DELETE FROM cancel_requests WHERE run_id=?", (full_id,))
            conn.executemany(
                "UPDATE phases SET state='pending', output=NULL, output_file=NULL,"
                " completed_seq=NULL, compensated=NULL, compensation_error=NULL"
                " WHERE run_id=? AND id=?",
                [(full_id, pid) for pid in rerun],
            )
        return self.get_run(full_id)

    # -- reading -----------------------------------------------------------------

    _RUN_COLUMNS = (
        "id, workflow, path, source_hash, status, started, ended, owner_pid, owner_start,"
        " resumes, error, outputs, counts, info"
    )

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id, or the only run whose id starts with it.

        Raises RunNotFound (none), UsageError (an ambiguous prefix), StateCorrupted.
        """
        rows = self._read(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id=?", (run_id,))
        if not rows and run_id:
            rows = self._read(
                f"SELECT {self._RUN_COLUMNS} FROM runs WHERE substr(id, 1, ?)=? LIMIT 6",
                (len(run_id), run_id),
            )
        if not rows:
            raise RunNotFound(
                f"no run '{run_id}' in {self.path}", hint="`orch runs` lists the recorded runs"
            )
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows[:5])
            raise UsageError(f"'{run_id}' matches several runs: {ids}; give more of the id")
        return run_record(rows[0])

    def has_run(self, run_id: str) -> bool:
        """Whether a run has exactly this id (no prefix match, unlike ``get_run``)."""
        return bool(self._read("SELECT 1 FROM runs WHERE id=?", (run_id,)))

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first (a run whose row cannot be read is shown as ``corrupt``)."""
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs ORDER BY started DESC, id DESC"
        rows = self._read(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        out = []
        for row in rows:
            try:
                out.append(run_record(row))
            except StateCorrupted:
                out.append(corrupt_run_record(row))
        return out

    def phases(self, run_id: str) -> list[PhaseRecord]:
        """The phases of a run in plan order (handler phases after). A planned phase has a
        row from its first event on (rows.py): the others are listed as pending, from
        the plan the run's row keeps. Raises StateCorrupted."""
        rows = self._read(PHASES, {"run": run_id})
        return [phase_record(run_id, row, self.state_dir) for row in rows]

    def items_done(self, run_id: str) -> dict[str, tuple[int, int]]:
        """(done, total) items of each foreach phase of the run still running (its row
        says ``running``), from the events of its latest start: the last progress event
        since then, or before any, the items that start says a resumed run keeps (``kept``:
        it does not run them again). Raises StateCorrupted."""
        rows = self._read(
            f"{LIVE}, starts AS (SELECT e.phase AS phase, MAX(e.seq) AS seq FROM events e"
            " WHERE e.run_id=:run AND e.event='phase_started'"
            " AND e.phase IN (SELECT id FROM live) GROUP BY e.phase),"
            " sized AS (SELECT s.phase, s.seq, json_extract(e.data, '$.items') AS total,"
            " COALESCE(json_extract(e.data, '$.kept'), 0) AS kept"
            " FROM starts s JOIN events e ON e.seq=s.seq"
            " WHERE json_valid(e.data) AND json_type(e.data, '$.items')='integer')"
            " SELECT phase, total,"
            " (SELECT json_extract(e.data, '$.progress.done') FROM events e"
            "  WHERE e.run_id=:run AND e.phase=z.phase AND e.seq>z.seq"
            "  AND e.event='phase_stream' AND json_valid(e.data)"
            "  AND json_type(e.data, '$.progress.done')='integer' ORDER BY e.seq DESC LIMIT 1),"
            " kept FROM sized z",
            {"run": run_id},
        )
        return {
            str(phase): (int(done if done is not None else kept), int(total))
            for phase, total, done, kept in rows
        }

    def events(
        self, run_id: str, *, phase: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, Event]]:
        """The run's events after sequence number ``after``, oldest first, the first ``limit``
        of them when given. Raises StateCorrupted."""
        sql = "SELECT seq, ts, event, phase, attempt, data FROM events WHERE run_id=? AND seq>?"
        args: list[Any] = [run_id, after]
        if phase is not None:
            sql += " AND phase=?"
            args.append(phase)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self._read(sql, args)
        trace_id = self._trace_id(run_id)
        return [(int(row[0]), event_record(run_id, row, trace_id)) for row in rows]

    def last_event(self, run_id: str) -> tuple[int, Event] | None:
        """The run's last stored event (one row), or None. Raises StateCorrupted."""
        rows = self._read(
            "SELECT seq, ts, event, phase, attempt, data FROM events WHERE run_id=?"
            " ORDER BY seq DESC LIMIT 1",
            (run_id,),
        )
        if not rows:
            return None
        return int(rows[0][0]), event_record(run_id, rows[0], self._trace_id(run_id))

    def stats_rows(
        self, since: float | None = None, workflow: str | None = None
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The raw rows ``orch stats`` folds (see state/stats.py), for runs started at or after
        ``since`` (all when None), of ``workflow`` (all when None):

        - runs: (workflow, status, started, ended), ``status`` as stored;
        - phases: (workflow, phase, state, attempts, started, ended, cached, agent,
          tokens, cost), the agent from the phase's first ``phase_started`` event, ``tokens``
          and ``cost`` as its metadata has them (``tokens`` a JSON text when an object);
        - breakers: (workflow, phase, agent, times opened), from ``breaker_opened`` events.
        """
        where = "r.started >= ?"
        args: list[Any] = [since if since is not None else float("-inf")]
        if workflow is not None:
            where += " AND r.workflow = ?"
            args.append(workflow)
        with self._snapshot() as read:  # one snapshot: a phase ending meanwhile is counted once
            runs = read(
                f"SELECT r.workflow, r.status, r.started, r.ended FROM runs r WHERE {where}",
                args,
            )
            # each phase's first start, by one pass over the window's events (a lookup per
            # phase scanned its run's events: minutes at 20,000 phases)
            phases = read(
                f"WITH w AS (SELECT r.id, r.workflow FROM runs r WHERE {where}),"
                " firsts AS (SELECT e.run_id, e.phase, MIN(e.seq) AS seq FROM events e"
                " JOIN w ON e.run_id = w.id WHERE e.event = 'phase_started'"
                " GROUP BY e.run_id, e.phase)"
                " SELECT w.workflow, p.id, p.state, p.attempts, p.started, p.ended, p.cached,"
                " (SELECT json_extract(e.data, '$.agent') FROM events e WHERE e.seq = f.seq),"
                " json_extract(p.metadata, '$.tokens'), json_extract(p.metadata, '$.cost')"
                " FROM w JOIN phases p ON p.run_id = w.id"
                " LEFT JOIN firsts f ON f.run_id = p.run_id AND f.phase = p.id",
                args,
            )
            for run_id, name in read(  # phases running now have no row: rows.RUNNING
                f"SELECT r.id, r.workflow FROM runs r WHERE {where} AND r.status = 'running'",
                args,
            ):
                phases += [
                    (name, pid, "running", attempts, began, None, 0, agent, None, None)
                    for pid, attempts, began, agent in read(
                        f"WITH running(id, attempts, started, first) AS ({RUNNING})"
                        " SELECT u.id, u.attempts, u.started, (SELECT json_extract(e.data,"
                        " '$.agent') FROM events e WHERE e.seq=u.first AND json_valid(e.data))"
                        " FROM running u",
                        {"run": run_id},
                    )
                ]
            breakers = read(
                "SELECT r.workflow, e.phase, json_extract(e.data, '$.agent'), COUNT(*)"
                " FROM runs r JOIN events e ON e.run_id = r.id"
                f" WHERE {where} AND e.event = 'breaker_opened' GROUP BY 1, 2, 3",
                args,
            )
        return runs, phases, breakers

    def _trace_id(self, run_id: str) -> str | None:
        """The trace id recorded for a run (tracing on), stamped on its events when read."""
        rows = self._read("SELECT json_extract(info, '$.trace_id') FROM runs WHERE id=?", (run_id,))
        value = rows[0][0] if rows else None
        return value if isinstance(value, str) else None

    def last_seq(self) -> int:
        """The highest event sequence number so far (0 for an empty store)."""
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    # -- approvals ---------------------------------------------------------------

    def decide(self, decision: Decision) -> Decision:
        """Record a decision on a waiting phase, once: the decision already recorded for
        that phase (by anyone, from any process) wins and is returned instead."""
        with self._writing(f"cannot record the decision in '{self.path}'") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO decisions(run_id, phase, approved, who, at, comment)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    decision.run_id,
                    decision.phase,
                    int(decision.approved),
                    decision.who,
                    decision.at,
                    decision.comment,
                ),
            )
        found = self.decision(decision.run_id, decision.phase)
        return found if found is not None else decision

    def decision(self, run_id: str, phase: str) -> Decision | None:
        """The decision recorded for a run's phase, or None."""
        rows = self._read(
            "SELECT approved, who, at, comment FROM decisions WHERE run_id=? AND phase=?",
            (run_id, phase),
        )
        if not rows:
            return None
        approved, who, at, comment = rows[0]
        return Decision(run_id, phase, bool(approved), str(who), float(at), comment)

    def decisions(self, run_id: str) -> dict[str, Decision]:
        """The decisions recorded for a run's phases (the current ones: a refusal asked
        again is in the phase's phase_failed event only), by phase."""
        rows = self._read(
            "SELECT phase, approved, who, at, comment FROM decisions WHERE run_id=?", (run_id,)
        )
        return {
            str(ph): Decision(run_id, str(ph), bool(ok), str(who), float(at), comment)
            for ph, ok, who, at, comment in rows
        }

    def waiting(self, run_ids: Sequence[str]) -> dict[str, list[str]]:
        """The phases waiting for approval of each of ``run_ids`` that has any (a phase
        already approved, waiting for a ``max_parallel`` slot, is not)."""
        found: dict[str, list[str]] = {}
        for start in range(0, len(run_ids), 500):  # within SQLite's bound on parameters
            chunk = list(run_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT run_id, id FROM phases WHERE run_id IN ({marks}) AND state='waiting'"
                " AND NOT EXISTS (SELECT 1 FROM decisions d"
                " WHERE d.run_id=phases.run_id AND d.phase=phases.id)"
                " ORDER BY run_id, idx",
                chunk,
            )
            for run_id, phase in rows:
                found.setdefault(str(run_id), []).append(str(phase))
        return found

    def waiting_since(self, run_id: str, phase: str) -> float | None:
        """When the phase's current wait for approval began: the ``since`` of its last
        phase_waiting (a wait asked again after a refusal begins anew), else (events
        written before ``since`` existed) its first phase_waiting's time."""
        last = self._last(run_id, phase, "'phase_waiting'")
        if last is not None and isinstance(last.data.get("since"), (int, float)):
            return float(last.data["since"])
        rows = self._read(
            "SELECT MIN(ts) FROM events WHERE run_id=? AND phase=? AND event='phase_waiting'",
            (run_id, phase),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def reopen(self, run_id: str, phase: str) -> bool:
        """Whether the phase's last wait for approval ended in a refusal (its last
        phase_failed, after its last phase_waiting, has ``approval``): then the refused
        decision is dropped, so that the phase is asked again (its record stays in
        that event and in the history). False otherwise (nothing changes)."""
        last = self._last(run_id, phase, "'phase_waiting', 'phase_failed'")
        if last is None or last.event != "phase_failed" or not last.data.get("approval"):
            return False
        with self._writing(f"cannot record the decision in '{self.path}'") as conn:
            conn.execute("DELETE FROM decisions WHERE run_id=? AND phase=?", (run_id, phase))
        return True

    def _last(self, run_id: str, phase: str, kinds: str) -> Event | None:
        """The phase's last event of one of ``kinds`` (an SQL list of quoted names)."""
        rows = self._read(
            "SELECT seq, ts, event, phase, attempt, data FROM events WHERE run_id=?"
            f" AND phase=? AND event IN ({kinds}) ORDER BY seq DESC LIMIT 1",
            (run_id, phase),
        )
        return event_record(run_id, rows[0], None) if rows else None

    def ended_after(self, seq: int) -> list[tuple[int, str, str]]:
        """Runs that ended after sequence ``seq``: (seq of the final event, run id, status)."""
        rows = self._read(
            "SELECT seq, run_id, event FROM events WHERE seq>? AND event IN"
            " ('workflow_completed', 'workflow_failed', 'workflow_cancelled') ORDER BY seq",
            (seq,),
        )
        return [(int(q), str(r), str(e).removeprefix("workflow_")) for q, r, e in rows]

    def metrics(self) -> dict[str, list[tuple[Any, ...]]]:
        """Aggregates for ``/metrics``: runs by status, phase durations and retries, agent load.

        ``runs``: (workflow, status, count) with live owners checked; ``phases``:
        (workflow, phase, count, seconds, retries) of ended phases; ``agents``:
        (agent, running phases) from the phase_started of phases still running.
        """
        runs: dict[tuple[str, str], int] = {}
        for run in self.list_runs():
            runs[(run.workflow, run.status)] = runs.get((run.workflow, run.status), 0) + 1
        phases = self._read(
            "SELECT r.workflow, p.id, COUNT(*), SUM(p.ended - p.started),"
            " SUM(MAX(p.attempts - 1, 0)) FROM phases p JOIN runs r ON r.id = p.run_id"
            " WHERE p.started IS NOT NULL AND p.ended IS NOT NULL GROUP BY r.workflow, p.id"
            " ORDER BY r.workflow, p.id"
        )
        agents: dict[str, int] = {}
        for (run_id,) in self._read("SELECT id FROM runs WHERE status='running'"):
            for agent, n in self._read(
                f"{LIVE} SELECT json_extract(e.data, '$.agent'), COUNT(DISTINCT e.phase)"
                " FROM events e WHERE e.run_id=:run AND e.event='phase_started'"
                " AND e.phase IN (SELECT id FROM live) AND json_valid(e.data) GROUP BY 1",
                {"run": run_id},
            ):
                if agent is not None:
                    agents[str(agent)] = agents.get(str(agent), 0) + int(n)
        return {
            "runs": [(w, s, n) for (w, s), n in sorted(runs.items())],
            "phases": [tuple(row) for row in phases],
            "agents": sorted(agents.items()),
        }

    # -- cancel requests (`orch cancel`) -------------------------------------------

    def request_cancel(self, run_id: str, *, now: float) -> None:
        """Ask the process that runs ``run_id`` to cancel it: every run started by
        ``orchestrator.runs.start`` (``orch run``, the Python API, ``orch serve``) polls
        ``cancel_requested``. A resume's claim clears the request."""
        with self._writing(f"cannot record a cancel request in '{self.path}'") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO cancel_requests(run_id, requested) VALUES (?, ?)",
                (run_id, now),
            )

    def cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked to cancel the run (``request_cancel``)."""
        return bool(self._read("SELECT 1 FROM cancel_requests WHERE run_id=?", (run_id,)))

    # -- schedules (orch serve) --------------------------------------------------

    def schedule_claim(
        self, workflow: str, entry: str, fire_time: float, outcome: str, *, now: float
    ) -> bool:
        """Record that ``fire_time`` of a schedule entry is handled; False when it already was.

        One row per handled fire time, written in one IMMEDIATE transaction: a fire
        time is handled once, across restarts and by two services on one store.
        """
        with self._writing(f"cannot record a schedule fire in '{self.path}'") as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO schedule_fires(workflow, entry, fire_time, decided, outcome)"
                " VALUES (?, ?, ?, ?, ?)",
                (workflow, entry, fire_time, now, outcome),
            )
            return cur.rowcount == 1

    def schedule_note(
        self, workflow: str, entry: str, fire_time: float, outcome: str, run_id: str | None
    ) -> None:
        """Update what a handled fire time did (the run it started, or why not)."""
        with self._writing(f"cannot record a schedule fire in '{self.path}'") as conn:
            conn.execute(
                "UPDATE schedule_fires SET outcome=?, run_id=? WHERE workflow=? AND entry=?"
                " AND fire_time=?",
                (outcome, run_id, workflow, entry, fire_time),
            )

    def schedule_last(self, workflow: str, entry: str) -> float | None:
        """The latest handled fire time of a schedule entry (None: never seen)."""
        rows = self._read(
            "SELECT MAX(fire_time) FROM schedule_fires WHERE workflow=? AND entry=?",
            (workflow, entry),
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def schedule_fires(self, workflow: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Handled fire times, newest first (baseline rows included)."""
        sql = "SELECT workflow, entry, fire_time, decided, outcome, run_id FROM schedule_fires"
        args: list[Any] = []
        if workflow is not None:
            sql += " WHERE workflow=?"
            args.append(workflow)
        rows = self._read(sql + " ORDER BY fire_time DESC LIMIT ?", [*args, limit])
        keys = ("workflow", "entry", "fire_time", "decided", "outcome", "run_id")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- cache -------------------------------------------------------------------

    def cache_get(self, key: str, *, now: float | None = None) -> CachedResult | None:
        """The cached result for ``key``, or None when absent or expired at ``now``."""
        rows = self._read(
            "SELECT output, metadata, created, expires FROM cache WHERE key=?", (key,)
        )
        if not rows:
            return None
        output, metadata, created, expires = rows[0]
        when = time.time() if now is None else now
        try:
            if expires is not None and float(expires) <= when:
                return None
            meta = json.loads(metadata or "{}")
            if not isinstance(meta, dict):
                raise TypeError("metadata is not a JSON object")
            return CachedResult(json.loads(output), meta, float(created))
        except (ValueError, TypeError):
            return None  # an unreadable cache entry is a miss, never an error

    def cache_clear(self) -> int:
        """Forget every cached result; returns how many there were."""
        with self._writing(f"cannot clear the cache in '{self.path}'") as conn:
            count = conn.execute("DELETE FROM cache").rowcount
        return int(count)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``ok`` or the problems found."""
        return "; ".join(str(r[0]) for r in self._read("PRAGMA integrity_check"))


_WRITABLE_HINT = "make it writable, or record runs elsewhere with --state-dir or ORCH_STATE_DIR"


def _writable(folder: Path, db: Path) -> bool:
    """Whether this process may write the state folder and its database files."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    return all(_file_writable(db.with_name(db.name + end)) for end in ("", "-wal", "-shm"))


def _file_writable(path: Path) -> bool:
    """Whether ``path`` is no obstacle to writing: gone, or writable by this process.

    SQLite deletes the -wal and -shm files when a process closes its last connection
    and makes them again on the next one, so the verdict comes from one look (a
    ``stat``): a check that first asks for access, then whether the file exists, could
    see it gone at the first look and back at the second and call a vanishing file
    read-only. ``os.access`` is asked only when the mode bits refuse (an ACL may allow).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return os.access(path, os.W_OK)
    return _mode_lets_me_write(st) or os.access(path, os.W_OK)


def _mode_lets_me_write(st: os.stat_result) -> bool:
    """Whether the permission bits of ``st`` let this process write the file."""
    if not hasattr(os, "geteuid"):  # not POSIX: the bits say little; ask os.access
        return False
    uid = os.geteuid()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


@contextlib.contextmanager
def _setup_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` for the duration of the block (a no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the setup race stays possible, but rare
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One BEGIN IMMEDIATE transaction (a deferred one fails at once on a busy database):
    committed when the block ends, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None, path: str) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        elif isinstance(error, StateError):
            future.set_exception(error)
        else:
            message = f"cannot write to the state database '{path}': {error}"
            future.set_exception(StateError(message))
