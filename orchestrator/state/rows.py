"""The state store's rows: how each event changes them, and how they read back as records.

``apply_event`` is called by ``state/sqlite.py`` inside the transaction that
stores the event, so an event and its derived rows are committed together. ``conn`` is the writer's
sqlite3 connection; this module only runs SQL on it (the import stays in sqlite.py).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import jsontext
from ..errors import RunTaken, StateCorrupted
from ..events import Event, note, phase_state, run_status
from .base import Owner, PhaseRecord, PhaseState, RunRecord

__all__ = [
    "LIVE",
    "OUTPUT_CAP",
    "PHASES",
    "RUNNING",
    "Known",
    "Plans",
    "apply_event",
    "apply_events",
    "corrupt_run_record",
    "dumps",
    "event_record",
    "phase_record",
    "run_record",
]

#: Outputs whose JSON is longer than this many characters are kept in files, not rows.
OUTPUT_CAP = 64 * 1024

#: Phases not in the plan (handlers, a fallback workflow) sort after the plan's phases.
_EXTRA = 1_000_000


def dumps(value: Any) -> str:
    """Compact strict JSON as stored (non-JSON values as their ``str``); raises NotJson."""
    if value is None:  # most outputs of a plain phase: no encoder call
        return "null"
    return jsontext.dumps(value, compact=True, what="the stored value")


def _abspath(path: str) -> str:
    """Workflow paths are stored absolute, so ``orch resume`` works from any folder."""
    if not path or path.startswith("<"):
        return path
    return os.path.abspath(path)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


#: Events per multi-row INSERT (the rest of a batch in halves: few distinct statements).
_CHUNK = 64
_INSERT_EVENTS = {
    size: "INSERT INTO events(run_id, ts, event, phase, attempt, data) VALUES "
    + ",".join(["(?, ?, ?, ?, ?, ?)"] * size)
    for size in (64, 32, 16, 8, 4, 2, 1)
}


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    """(start, size) of the multi-row statements for ``total`` rows: 64 at a time, the
    rest in halves (a few distinct statements, each prepared once)."""
    start = 0
    while start < total:
        size = _CHUNK
        while size > total - start:
            size //= 2
        yield start, size
        start += size


def _renumber(conn: Any, run: str, planned: Sequence[str]) -> None:
    """A resumed run's rows get their phases' places in its (new) plan. A planned phase
    gets its row at its first event (``_Rows.idx``): a run that just started has none."""
    if conn.execute("SELECT 1 FROM phases WHERE run_id=? LIMIT 1", (run,)).fetchone():
        conn.executemany(
            "UPDATE phases SET idx=? WHERE run_id=? AND id=?",
            [(i, run, pid) for i, pid in enumerate(planned)],
        )


def _plan_index(conn: Any, run: str) -> dict[str, int]:
    """The place of each planned phase of ``run``, from its row's ``info`` (a run this
    process did not start: its ``workflow_started`` was applied elsewhere); empty
    when the row or its ``info`` cannot tell (its phases then sort after the plan's)."""
    row = conn.execute("SELECT info FROM runs WHERE id=?", (run,)).fetchone()
    try:
        return _places(json.loads(row[0]).get("phases") if row and row[0] else None)
    except (ValueError, TypeError, AttributeError):
        return {}


def _places(planned: Sequence[Any] | None) -> dict[str, int]:
    """Each planned phase's place in the plan."""
    return {str(pid): i for i, pid in enumerate(planned or ())}


def _prepare(
    event: Event, spill: Callable[[str, str, str], str]
) -> tuple[tuple[Any, ...], str | None, str | None]:
    """``event`` as (its ``events`` row, its output as the phase row stores it: JSON text,
    or the path of the file it was spilled to). Raises NotJson and OSError (the spill)."""
    data = event.data
    output_text: str | None = None
    output_file: str | None = None
    kind = event.event
    if kind == "phase_completed" and event.phase is not None:
        output_text = dumps(data.get("output"))
        if len(output_text) > OUTPUT_CAP:
            output_file = spill(event.run_id, event.phase, output_text)
            output_text = None
            stored = dict(data)
            stored["output"] = {"$file": output_file}
            text: str | None = dumps(stored)
        else:
            text = _completed_json(data, output_text)
    elif kind == "phase_started" and len(data) == 1 and type(data.get("agent")) is str:
        text = '{"agent":' + jsontext.quoted(data["agent"]) + "}"
    else:
        text = dumps(data) if data else None
    row = (event.run_id, event.ts, kind, event.phase, event.attempt, text)
    return row, output_text, output_file


#: The keys of ``events.phase_completed``'s data, in its order.
_COMPLETED_KEYS = (
    "status",
    "output",
    "duration",
    "attempts",
    "fallback_used",
    "cached",
    "metadata",
)
_JSON_BOOL = {True: "true", False: "false"}


def _completed_json(data: Mapping[str, Any], output_text: str) -> str:
    """``dumps(data)`` of a ``phase_completed``, its output's JSON (``output_text``) made
    already: the output is not encoded twice (an LLM's answer: kilobytes), and the usual
    data (``events.phase_completed``'s keys, plain values) is written here, at a third of
    the encoder's cost (about 12,000 instructions a phase). Any other data: ``dumps``.
    The same text either way (tests/state/test_rows_json.py)."""
    if tuple(data) != _COMPLETED_KEYS:
        return dumps(data)
    duration, attempts = data["duration"], data["attempts"]
    fallback_used, cached, metadata = data["fallback_used"], data["cached"], data["metadata"]
    if (
        data["status"] != "completed"
        or type(duration) is not float
        or not math.isfinite(duration)
        or type(attempts) is not int
        or type(fallback_used) is not bool
        or type(cached) is not bool
        or type(metadata) is not dict
    ):
        return dumps(data)
    return (
        f'{{"status":"completed","output":{output_text},"duration":{duration!r},'
        f'"attempts":{attempts!r},"fallback_used":{_JSON_BOOL[fallback_used]},'
        f'"cached":{_JSON_BOOL[cached]},"metadata":{dumps(metadata) if metadata else "{}"}}}'
    )


class Known:
    """What a writer knows of one run it writes, kept from one batch to the next.

    ``places``: each planned phase's place in the plan. ``rows``: the phases that have
    a row. A running phase gets its row when it ends (or waits for an approval): its
    start is its ``phase_started`` event, which the readers read (``RUNNING``), and
    ``started`` keeps what the row is made with meanwhile (its first start's time and
    sequence number, its attempt: raised by ``phase_retry``). ``whole``: this writer
    wrote the run's latest ``workflow_started``, so ``started`` lists every phase
    running without a row.
    """

    __slots__ = ("places", "rows", "started", "whole")

    def __init__(self, places: dict[str, int], rows: set[str], whole: bool) -> None:
        self.places = places
        self.rows = rows
        self.started: dict[str, tuple[float, int, int]] = {}
        self.whole = whole


#: What a writer knows of the runs it writes: run id -> ``Known``.
Plans = dict[str, Known]


def apply_event(
    conn: Any,
    event: Event,
    *,
    owner: Owner,
    spill: Callable[[str, str, str], str],
    plans: Plans | None = None,
) -> None:
    """Insert ``event`` and update the run and phase rows it concerns.

    ``owner`` is recorded on ``workflow_started``; ``spill(run, phase, json_text)``
    stores an output too big for a row and returns its path. ``plans``: the writer's
    ``Plans``, kept from one call to the next (a run's ``workflow_started`` puts its
    plan there, its end takes it out). Raises sqlite3 errors.
    """
    apply_events(conn, (event,), owner=owner, spill=spill, plans=plans)


def apply_events(
    conn: Any,
    events: Sequence[Event],
    *,
    owner: Owner,
    spill: Callable[[str, str, str], str],
    plans: Plans | None = None,
) -> None:
    """``apply_event`` for each of ``events``, in order: their rows go in by multi-row
    INSERTs of up to 64 (a statement per row costs about twice as much), each chunk's run
    and phase rows are updated right after it. Raises sqlite3 errors."""
    rows = _Rows(conn, {} if plans is None else plans)
    for start, size in _chunks(len(events)):
        chunk = events[start : start + size]
        params: list[Any] = []
        outputs = []
        for event in chunk:
            row, output_text, output_file = _prepare(event, spill)
            params.extend(row)
            outputs.append((output_text, output_file))
        last = int(conn.execute(_INSERT_EVENTS[size], params).lastrowid)
        # one INSERT takes consecutive sequence numbers (AUTOINCREMENT, under the write lock)
        seq = last - size
        for event, (output_text, output_file) in zip(chunk, outputs, strict=True):
            seq += 1
            _derive(rows, event, seq, output_text, output_file, owner)
    rows.flush()


class _Rows:
    """The run and phase row writes of a batch of events, in order. An UPDATE of the row
    a phase has (the INSERT when it has none) is held back, and a run of them with one
    statement goes in by one ``executemany`` (a call per row costs about 0.4 us more);
    any other statement first writes what is held back. The INSERT's values are made
    only when an UPDATE found no row (``values_of(params, idx)``): most never are.

    A phase's row is made at its first event (``phase_started``, or ``phase_skipped``
    for one that never ran), at its place in the plan (``idx``); a planned phase
    without a row is pending (``SqliteStore.phases`` lists it so)."""

    __slots__ = ("conn", "plans", "sql", "insert", "values_of", "held", "seqs")

    def __init__(self, conn: Any, plans: Plans) -> None:
        self.conn = conn
        self.plans = plans
        self.sql = ""
        self.insert = ""
        self.values_of: Callable[[tuple[Any, ...], int], tuple[Any, ...]] = _no_values
        self.held: list[tuple[Any, ...]] = []
        self.seqs: list[int] = []

    def known(self, run: str) -> Known:
        """What this writer knows of ``run`` (read from its rows the first time: a run
        whose ``workflow_started`` another process wrote)."""
        found = self.plans.get(run)
        if found is None:
            have = {str(r[0]) for r in self.conn.execute(_ROW_IDS, (run,))}
            found = self.plans[run] = Known(_plan_index(self.conn, run), have, False)
        return found

    def idx(self, run: str, phase: str, seq: int) -> int:
        """The place of ``phase``'s row: its place in the run's plan; a phase outside the
        plan (a handler, the fallback workflow) after the plan's, in the order it came
        (``seq``: the number of its first event)."""
        found = self.known(run).places.get(phase)
        return _EXTRA + seq if found is None else found

    def made(self, run: str, phase: str, seq: int) -> tuple[int, float | None, int]:
        """A phase's row is made now: its place, when it started and its attempt if it
        was running without a row (None and 0 if it never started)."""
        known = self.known(run)
        known.rows.add(phase)
        began = known.started.pop(phase, None)
        if began is None:
            return self.idx(run, phase, seq), None, 0
        return self.idx(run, phase, began[1]), began[0], began[2]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.flush()
        self.conn.execute(sql, params)

    def hold(self, sql: str, params: tuple[Any, ...]) -> None:
        """A statement that always writes its row (an upsert), batched as UPDATEs are."""
        self.update_or_insert(sql, params, "", _no_values, 0)

    def update_or_insert(
        self,
        update: str,
        params: tuple[Any, ...],
        insert: str,
        values_of: Callable[[tuple[Any, ...], int], tuple[Any, ...]],
        seq: int,
    ) -> None:
        """UPDATE the row; INSERT ``values_of(params, idx)`` when the UPDATE found none
        (``idx``: the row's place, ``idx(run, phase, seq)``)."""
        if update != self.sql:
            self.flush()
            self.sql, self.insert, self.values_of = update, insert, values_of
        self.held.append(params)
        self.seqs.append(seq)

    def flush(self) -> None:
        held = self.held
        if not held:
            return
        seqs = self.seqs
        self.held, self.seqs = [], []
        conn, sql = self.conn, self.sql
        if conn.executemany(sql, held).rowcount == len(held) or not self.insert:
            return  # every row was there (an upsert's always is)
        # a row was missing (a phase outside the plan): each again (the UPDATEs are
        # idempotent), inserting the rows not found
        for params, seq in zip(held, seqs, strict=True):
            if conn.execute(sql, params).rowcount == 0:
                run, phase = params[-2:]  # every such UPDATE ends WHERE run_id=? AND id=?
                conn.execute(self.insert, self.values_of(params, self.idx(run, phase, seq)))


_ROW_IDS = "SELECT id FROM phases WHERE run_id=?"


def _running_rows(
    conn: Any, run: str, places: Mapping[str, int], state: str, ended: float | None
) -> None:
    """Rows for the phases of ``run`` running without one (``RUNNING``), in ``state``
    (``running``: a resume keeps them read so; ``cancelled`` at ``ended``: the run ended
    under them)."""
    conn.executemany(
        "INSERT INTO phases(run_id, id, idx, state, attempts, started, ended)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (run, pid, places.get(pid, _EXTRA + first), state, attempts, began, ended)
            for pid, attempts, began, first in conn.execute(RUNNING, {"run": run})
        ],
    )


def _no_values(params: tuple[Any, ...], idx: int) -> tuple[Any, ...]:
    raise AssertionError("no statement held")  # pragma: no cover - flush holds none then


def _completed_statement(
    spilled: bool, described: bool
) -> tuple[str, str, Callable[[tuple[Any, ...], int], tuple[Any, ...]]]:
    """A ``phase_completed``'s UPDATE, INSERT and INSERT values (as ``update_or_insert``
    takes them) for an output spilled to a file or not, and metadata or none: a column
    that is NULL is written so in the statement, not bound (binding None goes through
    sqlite3's adapter lookup: about a tenth of the UPDATE's cost each)."""
    update = (
        "UPDATE phases SET state='completed', attempts=?, started=COALESCE(started, ?),"
        f" ended=?, output=?, output_file={'?' if spilled else 'NULL'}, error=NULL, cached=?,"
        " fallback_used=?, completed_seq=COALESCE(completed_seq, ?),"
        f" metadata={'?' if described else 'NULL'} WHERE run_id=? AND id=?"
    )
    insert = (
        "INSERT INTO phases(run_id, id, idx, state, attempts, started, ended, output,"
        " output_file, cached, fallback_used, completed_seq, metadata)"
        " VALUES (?, ?, ?, 'completed', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def values_of(p: tuple[Any, ...], idx: int) -> tuple[Any, ...]:
        attempts, started, ended, output, *rest = p
        output_file = rest.pop(0) if spilled else None
        cached, fallback_used, completed_seq, *rest = rest
        meta_text = rest.pop(0) if described else None
        run, phase = rest
        return (
            run,
            phase,
            idx,
            attempts,
            started,
            ended,
            output,
            output_file,
            cached,
            fallback_used,
            completed_seq,
            meta_text,
        )

    return update, insert, values_of


_COMPLETED = {
    (spilled, described): _completed_statement(spilled, described)
    for spilled in (False, True)
    for described in (False, True)
}


def _new_completed(spilled: bool, described: bool) -> str:
    """The row of a ``phase_completed`` whose phase has none (it ran without one: Known):
    values (run, phase, idx, attempts, started, ended, output[, output_file], cached,
    fallback_used, completed_seq[, metadata]). An upsert all the same: a row a writer
    did not know of (another process made it) is overwritten, not a failed batch."""
    return (
        "INSERT INTO phases(run_id, id, idx, state, attempts, started, ended, output,"
        " output_file, cached, fallback_used, completed_seq, metadata)"
        f" VALUES (?, ?, ?, 'completed', ?, ?, ?, ?, {'?' if spilled else 'NULL'}, ?, ?, ?,"
        f" {'?' if described else 'NULL'})"
        " ON CONFLICT(run_id, id) DO UPDATE SET state='completed',"
        " attempts=excluded.attempts, started=excluded.started, ended=excluded.ended,"
        " output=excluded.output, output_file=excluded.output_file, error=NULL,"
        " cached=excluded.cached, fallback_used=excluded.fallback_used,"
        " completed_seq=COALESCE(phases.completed_seq, excluded.completed_seq),"
        " metadata=excluded.metadata"
    )


_NEW_COMPLETED = {
    (spilled, described): _new_completed(spilled, described)
    for spilled in (False, True)
    for described in (False, True)
}


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


#: When the latest launch of run ``:run`` began: the number of its ``workflow_started``.
_LAUNCH = (
    "COALESCE((SELECT json_extract(r.info, '$.launch') FROM runs r"
    " WHERE r.id=:run AND json_valid(r.info)), 0)"
)

#: The phases of run ``:run`` that started in its latest launch and have no row: they
#: are running (or were, when its process died). (id, attempts, when it started, the
#: number of its first event). A running phase gets its row when it ends (Known).
RUNNING = (
    "SELECT e.phase, MAX(CASE WHEN e.event='phase_started' THEN COALESCE(e.attempt, 1)"
    " WHEN json_valid(e.data) AND json_type(e.data, '$.item') IS NULL"
    " AND json_type(e.data, '$.next_attempt')='integer'"
    " THEN json_extract(e.data, '$.next_attempt') ELSE 1 END),"
    " MIN(CASE WHEN e.event='phase_started' THEN e.ts END),"
    " MIN(CASE WHEN e.event='phase_started' THEN e.seq END)"
    f" FROM events e WHERE e.run_id=:run AND e.seq>{_LAUNCH} AND e.phase IS NOT NULL"
    " AND e.event IN ('phase_started', 'phase_retry')"
    " AND NOT EXISTS (SELECT 1 FROM phases p WHERE p.run_id=e.run_id AND p.id=e.phase)"
    " GROUP BY e.phase HAVING MIN(CASE WHEN e.event='phase_started' THEN e.seq END) IS NOT NULL"
)

#: The phases of run ``:run`` running now: those with a ``running`` row (resumed,
#: approved) and those running without a row (``RUNNING``), as the CTE ``live(id)``.
LIVE = (
    f"WITH running(id, attempts, started, first) AS ({RUNNING}),"
    " live(id) AS (SELECT id FROM phases WHERE run_id=:run AND state='running'"
    " UNION SELECT id FROM running)"
)

#: Every phase of run ``:run``, as ``phase_record`` reads them, in plan order: its row,
#: or running (``RUNNING``), or pending (planned, not started: from the run's
#: ``info.phases``); handler phases after the plan's, in the order they started.
PHASES = (
    f"WITH running(id, attempts, started, first) AS ({RUNNING}),"
    " planned(id, idx) AS (SELECT j.value, j.key FROM runs r, json_each(r.info, '$.phases') j"
    " WHERE r.id=:run AND json_valid(r.info) AND json_type(r.info, '$.phases')='array')"
    " SELECT id, state, attempts, started, ended, output, output_file, error, cached,"
    " fallback_used, completed_seq, compensated, compensation_error, metadata, idx"
    " FROM phases WHERE run_id=:run"
    " UNION ALL SELECT u.id, 'running', u.attempts, u.started, NULL, NULL, NULL, NULL, 0, 0,"
    f" NULL, NULL, NULL, NULL, COALESCE(pl.idx, {_EXTRA} + u.first)"
    " FROM running u LEFT JOIN planned pl ON pl.id=u.id"
    " UNION ALL SELECT pl.id, 'pending', 0, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL,"
    " NULL, NULL, pl.idx FROM planned pl LEFT JOIN running u ON u.id=pl.id"
    " WHERE u.id IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM phases p WHERE p.run_id=:run AND p.id=pl.id)"
    " ORDER BY 15"
)


def _derive(
    rows: _Rows,
    event: Event,
    seq: int,
    output_text: str | None,
    output_file: str | None,
    owner: Owner,
) -> None:
    """Update the run and phase rows that the stored event number ``seq`` concerns."""
    data = event.data
    kind = event.event
    run, phase, ts = event.run_id, event.phase, event.ts
    if kind == "workflow_started":
        planned: list[Any] = list(data.get("phases") or ())
        info = {
            "phases": planned,
            "fingerprints": dict(data.get("fingerprints") or {}),
            "inputs": data.get("inputs") or {},
            "launch": seq,  # where this launch's events begin (RUNNING reads after it)
        }
        if event.trace_id:
            info["trace_id"] = event.trace_id
        if data.get("source"):  # a workflow that is not a file: what a resume reads
            info["source"] = str(data["source"])
        have: set[str] = set()  # the phases with a row
        if data.get("resumed_from"):
            # the phases its last launch left running without a row keep reading running
            # (RUNNING reads the latest launch only): rows for them, as their ends would
            rows.flush()
            _running_rows(rows.conn, run, _plan_index(rows.conn, run), "running", None)
            have = {str(r[0]) for r in rows.conn.execute(_ROW_IDS, (run,))}
        elif rows.conn.execute("SELECT 1 FROM runs WHERE id=?", (run,)).fetchone():
            # a new run, and one with its id started first (runs.start checked it)
            raise RunTaken(f"run '{run}' already exists: a new run needs an id of its own")
        rows.execute(
            "INSERT INTO runs(id, workflow, path, source_hash, status, started, owner_pid,"
            " owner_start, info) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET workflow=excluded.workflow, path=excluded.path,"
            " source_hash=excluded.source_hash, status='running', ended=NULL, error=NULL,"
            " owner_pid=excluded.owner_pid, owner_start=excluded.owner_start,"
            " resumes=resumes+1, info=excluded.info",
            (
                run,
                str(data.get("workflow", "")),
                _abspath(str(data.get("path", ""))),
                str(data.get("source_hash", "")),
                ts,
                owner.pid,
                owner.start,
                dumps(info),
            ),
        )
        rows.flush()
        rows.plans[run] = Known(_places(planned), have, True)
        _renumber(rows.conn, run, planned)
    elif phase is None:
        status = run_status(event)
        if status is not None:
            rows.execute(
                "UPDATE runs SET status=?, ended=?, error=?, outputs=?, counts=? WHERE id=?",
                (
                    status,
                    ts,
                    _text(data.get("error")),
                    dumps(data.get("outputs")),
                    dumps(data.get("counts") or {}),
                    run,
                ),
            )
            known = rows.plans.pop(run, None)  # the run ended: a resume loads it again
            # A phase still running (or waiting) when its run ended did not finish: cancelled.
            rows.execute(
                "UPDATE phases SET state='cancelled', ended=?"
                " WHERE run_id=? AND state IN ('running', 'waiting')",
                (ts, run),
            )
            if known is None or not known.whole or known.started:  # running without a row
                places = known.places if known is not None else _plan_index(rows.conn, run)
                _running_rows(rows.conn, run, places, "cancelled", ts)
    elif kind == "phase_started":
        known = rows.known(run)
        attempt = event.attempt or 1
        if phase not in known.rows:  # its row is made when it ends (Known)
            first = known.started.get(phase)
            if first is None:
                known.started[phase] = (ts, seq, attempt)
            elif attempt > first[2]:
                known.started[phase] = (first[0], first[1], attempt)
            return
        # a phase that has a row (resumed, approved): it runs again
        rows.hold(
            "INSERT INTO phases(run_id, id, idx, state, attempts, started)"
            " VALUES (?, ?, ?, 'running', ?, ?) ON CONFLICT(run_id, id) DO UPDATE SET"
            " state='running', attempts=excluded.attempts, started=CASE WHEN"
            " excluded.attempts<=1 OR started IS NULL THEN excluded.started ELSE started END,"
            " ended=NULL, error=NULL",
            (run, phase, rows.idx(run, phase, seq), attempt, ts),
        )
    elif kind == "phase_waiting":  # an approval: the phase waits for a person's decision
        rows.hold(
            "INSERT INTO phases(run_id, id, idx, state) VALUES (?, ?, ?, 'waiting')"
            " ON CONFLICT(run_id, id) DO UPDATE SET state='waiting', ended=NULL, error=NULL",
            (run, phase, rows.made(run, phase, seq)[0]),
        )
    elif kind == "phase_completed":
        attempts = int(data.get("attempts") or event.attempt or 1)
        cached = int(bool(data.get("cached")))
        fallback_used = int(bool(data.get("fallback_used")))
        metadata = data.get("metadata")
        meta_text = dumps(metadata) if metadata else None
        spilled, described = output_file is not None, meta_text is not None
        params: tuple[Any, ...]
        if phase not in rows.known(run).rows:  # the usual phase: its row is made here
            idx, began, _ = rows.made(run, phase, seq)
            if began is None:  # no start (a cache hit): when its output was made
                began = ts - _seconds(data.get("duration"))
            params = (run, phase, idx, attempts, began, ts)
            params += (output_text, output_file) if spilled else (output_text,)
            params += (cached, fallback_used, seq)
            params += (meta_text,) if described else ()
            rows.hold(_NEW_COMPLETED[spilled, described], params)
            return
        # UPDATE its row (made when it waited for approval, or by an earlier launch)
        started = ts - _seconds(data.get("duration"))
        update, insert, values_of = _COMPLETED[spilled, described]
        if spilled or described:
            params = (attempts, started, ts, output_text)
            params += (output_file,) if spilled else ()
            params += (cached, fallback_used, seq)
            params += (meta_text, run, phase) if described else (run, phase)
        else:
            params = (attempts, started, ts, output_text, cached, fallback_used, seq, run, phase)
        rows.update_or_insert(update, params, insert, values_of, seq)
    elif kind in ("phase_failed", "phase_skipped"):
        state = str(phase_state(event))
        metadata = data.get("metadata")  # what a failed phase's calls used, as completed's
        idx, began, tried = rows.made(run, phase, seq)
        rows.hold(
            "INSERT INTO phases(run_id, id, idx, state, attempts, started, ended, error,"
            " metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(run_id, id) DO UPDATE SET state=excluded.state,"
            " attempts=MAX(attempts, excluded.attempts),"
            " started=COALESCE(excluded.started, phases.started), ended=excluded.ended,"
            " error=excluded.error, metadata=COALESCE(excluded.metadata, phases.metadata)",
            (
                run,
                phase,
                idx,
                state,
                max(int(data.get("attempts") or event.attempt or 0), tried),
                began,
                ts,
                note(event),
                dumps(metadata) if metadata else None,
            ),
        )
    elif kind == "phase_retry":
        nxt = data.get("next_attempt")
        if isinstance(nxt, int) and "item" not in data:  # the attempt about to start
            known = rows.known(run)
            first = known.started.get(phase)
            if first is not None:  # running without a row (RUNNING reads it)
                known.started[phase] = (first[0], first[1], max(first[2], nxt))
            elif phase in known.rows:
                rows.execute(
                    "UPDATE phases SET attempts=? WHERE run_id=? AND id=?", (nxt, run, phase)
                )
    elif kind == "phase_stream":
        if data.get("compensation") == "started":  # saga write-ahead marker
            rows.execute("UPDATE phases SET compensated=-1 WHERE run_id=? AND id=?", (run, phase))
    elif kind == "phase_compensated":
        rows.execute(
            "UPDATE phases SET compensated=?, compensation_error=? WHERE run_id=? AND id=?",
            (int(bool(data.get("ok"))), _text(data.get("error")), run, phase),
        )


#: Run statuses a row may hold (``interrupted`` is derived when read, never stored).
_RUN_STATUSES = frozenset({"running", "completed", "failed", "cancelled"})


def run_record(row: Sequence[Any]) -> RunRecord:
    """A ``runs`` row as a RunRecord (``running`` with a dead owner reads ``interrupted``).

    Every column is checked for its type (a row edited by hand or by a bad disk
    must not crash a command later): raises StateCorrupted naming the run and the row.
    """
    (rid, workflow, path, source_hash, status, started, ended, pid, start, resumes) = row[:10]
    error, outputs, counts, info = row[10:14]
    name = _label(rid)
    try:
        if status not in _RUN_STATUSES:
            raise ValueError(f"status {status!r} is not a run status")
        owner = Owner(_int(pid, "owner_pid"), _str(start, "owner_start")) if pid else None
        if status == "running" and (owner is None or not owner.alive()):
            status = "interrupted"
        info_data = _json_object(info or "{}", "info")
        counts_data = _json_object(counts, "counts") if counts else {}
        return RunRecord(
            id=_str(rid, "id"),
            workflow=_str(workflow, "workflow"),
            path=_str(path, "path"),
            status=status,
            started=_time(started, "started"),
            ended=_time(ended, "ended") if ended is not None else None,
            source_hash=_str(source_hash or "", "source_hash"),
            owner=owner,
            resumes=_int(resumes, "resumes"),
            error=_str(error, "error") if error is not None else None,
            outputs=json.loads(_str(outputs, "outputs")) if outputs else None,
            phase_ids=tuple(_str(p, "info.phases") for p in info_data.get("phases") or ()),
            fingerprints={
                _str(k, "info.fingerprints"): _str(v, "info.fingerprints")
                for k, v in dict(info_data.get("fingerprints") or {}).items()
            },
            inputs=dict(info_data.get("inputs") or {}),
            counts={_str(k, "counts"): _int(v, "counts") for k, v in counts_data.items()},
            trace_id=info_data.get("trace_id"),
            source=_str(info_data["source"], "info.source") if "source" in info_data else None,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise StateCorrupted(
            f"run '{name}': row '{name}' of table 'runs' cannot be read ({exc})",
            hint="other runs are still readable; `orch runs` lists them",
        ) from exc


def corrupt_run_record(row: Sequence[Any]) -> RunRecord:
    """How ``orch runs`` lists a ``runs`` row that ``run_record`` refused (``corrupt``)."""
    started = row[5]
    try:
        when = _time(started, "started")
    except (ValueError, TypeError):
        when = 0.0
    return RunRecord(
        id=_label(row[0]),
        workflow=_label(row[1]),
        path=_label(row[2]),
        status="corrupt",
        started=when,
    )


def phase_record(run_id: str, row: Sequence[Any], state_dir: Path) -> PhaseRecord:
    """A ``phases`` row as a PhaseRecord; a spilled output is read from ``state_dir``.

    Raises StateCorrupted naming the run, the phase and the row.
    """
    pid = _label(row[0])
    try:
        output: Any = None
        if row[6]:
            spilled = state_dir / _str(row[6], "output_file")
            output = json.loads(spilled.read_text(encoding="utf-8"))
        elif row[5] is not None:
            output = json.loads(_str(row[5], "output"))
        return PhaseRecord(
            run_id=run_id,
            id=_str(row[0], "id"),
            state=PhaseState(row[1]),
            attempts=_int(row[2] or 0, "attempts"),
            started=_time(row[3], "started") if row[3] is not None else None,
            ended=_time(row[4], "ended") if row[4] is not None else None,
            output=output,
            error=_str(row[7], "error") if row[7] is not None else None,
            cached=bool(_int(row[8] or 0, "cached")),
            fallback_used=bool(_int(row[9] or 0, "fallback_used")),
            completed_seq=_int(row[10], "completed_seq") if row[10] is not None else None,
            compensated=None if row[11] in (None, -1) else bool(_int(row[11], "compensated")),
            compensation_started=row[11] is not None,
            compensation_error=_str(row[12], "compensation_error") if row[12] is not None else None,
            metadata=_json_object(row[13], "metadata") if row[13] else {},
        )
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise StateCorrupted(
            f"run '{run_id}' phase '{pid}': its row in table 'phases' cannot be read ({exc})",
            hint="other runs are still readable; `orch runs` lists them",
        ) from exc


def event_record(run_id: str, row: Sequence[Any], trace_id: str | None = None) -> Event:
    """An ``events`` row (seq, ts, event, phase, attempt, data) as an Event (stamped with
    the run's ``trace_id`` when it was traced).

    Raises StateCorrupted naming the run, the phase and the row.
    """
    seq, ts, kind, ph, attempt, data = row
    try:
        payload = json.loads(_str(data, "data")) if data else {}
        if not isinstance(payload, dict):
            raise TypeError("data is not a JSON object")
        return Event(
            _str(kind, "event"),
            run_id,
            _time(ts, "ts"),
            _str(ph, "phase") if ph is not None else None,
            _int(attempt, "attempt") if attempt is not None else None,
            payload,
            trace_id,
        )
    except (ValueError, TypeError) as exc:
        where = f" phase '{_label(ph)}'" if ph else ""
        raise StateCorrupted(
            f"run '{run_id}'{where}: row {seq} of table 'events' cannot be read ({exc})",
            hint="other runs are still readable; `orch runs` lists them",
        ) from exc


def _label(value: Any) -> str:
    """A column shown in a message or a ``corrupt`` line, whatever its type."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _str(value: Any, column: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{column} is {type(value).__name__}, not text")
    return value


def _int(value: Any, column: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{column} is {_label(value)!r}, not an integer")
    return value


#: Timestamps are seconds since 1970 before the year 10000 (what dates can show).
_LATEST = 253_402_300_800.0


def _time(value: Any, column: str) -> float:
    """A stored timestamp (a REAL column may hold any text, or an infinite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{column} is {_label(value)!r}, not a time")
    if not 0.0 <= value < _LATEST:  # NaN fails too
        raise ValueError(f"{column} is {value!r}, not a time")
    return float(value)


def _json_object(value: Any, column: str) -> dict[str, Any]:
    data = json.loads(_str(value, column))
    if not isinstance(data, dict):
        raise TypeError(f"{column} is not a JSON object")
    return data
