"""The state store's rows: how each event changes them, and how they read back as records.

``apply_event`` is called by ``state/sqlite.py`` inside the transaction that
stores the event, so an event and its derived rows are committed together. ``conn`` is the writer's
sqlite3 connection; this module only runs SQL on it (the import stays in sqlite.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import StateCorrupted
from ..events import Event, note, phase_state, run_status
from .base import Owner, PhaseRecord, PhaseState, RunRecord

__all__ = ["OUTPUT_CAP", "apply_event", "dumps", "phase_record", "run_record"]

#: Outputs whose JSON is longer than this many characters are kept in files, not rows.
OUTPUT_CAP = 64 * 1024

#: Phases not in the plan (handlers, a fallback workflow) sort after the plan's phases.
_EXTRA = 1_000_000


def dumps(value: Any) -> str:
    """Compact JSON as stored (non-JSON values as their ``str``)."""
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _abspath(path: str) -> str:
    """Workflow paths are stored absolute, so ``orch resume`` works from any folder."""
    if not path or path.startswith("<"):
        return path
    return os.path.abspath(path)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def apply_event(
    conn: Any, event: Event, *, owner: Owner, spill: Callable[[str, str, str], str]
) -> None:
    """Insert ``event`` and update the run and phase rows it concerns.

    ``owner`` is recorded on ``workflow_started``; ``spill(run, phase, json_text)``
    stores an output too big for a row and returns its path. Raises sqlite3 errors.
    """
    data = event.data
    kind = event.event
    output_text: str | None = None
    output_file: str | None = None
    stored = data
    if kind == "phase_completed" and event.phase is not None:
        output_text = dumps(data.get("output"))
        if len(output_text) > OUTPUT_CAP:
            output_file = spill(event.run_id, event.phase, output_text)
            output_text = None
            stored = dict(data)
            stored["output"] = {"$file": output_file}
    cur = conn.execute(
        "INSERT INTO events(run_id, ts, event, phase, attempt, data) VALUES (?, ?, ?, ?, ?, ?)",
        (
            event.run_id,
            event.ts,
            kind,
            event.phase,
            event.attempt,
            dumps(stored) if stored else None,
        ),
    )
    seq = cur.lastrowid
    run, phase, ts = event.run_id, event.phase, event.ts
    if kind == "workflow_started":
        info = {
            "phases": list(data.get("phases") or ()),
            "fingerprints": dict(data.get("fingerprints") or {}),
            "inputs": data.get("inputs") or {},
        }
        conn.execute(
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
        conn.executemany(
            "INSERT INTO phases(run_id, id, idx, state) VALUES (?, ?, ?, 'pending')"
            " ON CONFLICT(run_id, id) DO UPDATE SET idx=excluded.idx",
            [(run, pid, i) for i, pid in enumerate(info["phases"])],
        )
    elif phase is None:
        status = run_status(event)
        if status is not None:
            conn.execute(
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
            # A phase still running (or waiting) when its run ended did not finish: cancelled.
            conn.execute(
                "UPDATE phases SET state='cancelled', ended=?"
                " WHERE run_id=? AND state IN ('running', 'waiting')",
                (ts, run),
            )
    elif kind == "phase_started":
        # UPDATE first: the row exists for every planned phase, and a plain UPDATE is
        # cheaper than an upsert on the hot path; handler phases get their row here.
        attempt = event.attempt or 1
        cur = conn.execute(
            "UPDATE phases SET state='running', attempts=?,"
            " started=CASE WHEN ?<=1 OR started IS NULL THEN ? ELSE started END,"
            " ended=NULL, error=NULL WHERE run_id=? AND id=?",
            (attempt, attempt, ts, run, phase),
        )
        if cur.rowcount == 0:
            conn.execute(
                "INSERT INTO phases(run_id, id, idx, state, attempts, started)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (run, phase, _EXTRA + (seq or 0), attempt, ts),
            )
    elif kind == "phase_waiting":  # an approval: the phase waits for a person's decision
        cur = conn.execute(
            "UPDATE phases SET state='waiting', ended=NULL, error=NULL WHERE run_id=? AND id=?",
            (run, phase),
        )
        if cur.rowcount == 0:
            conn.execute(
                "INSERT INTO phases(run_id, id, idx, state) VALUES (?, ?, ?, 'waiting')",
                (run, phase, _EXTRA + (seq or 0)),
            )
    elif kind == "phase_completed":
        duration = data.get("duration")
        started = ts - float(duration) if isinstance(duration, (int, float)) else ts
        attempts = int(data.get("attempts") or event.attempt or 1)
        cached = int(bool(data.get("cached")))
        fallback_used = int(bool(data.get("fallback_used")))
        metadata = data.get("metadata")
        meta_text = dumps(metadata) if metadata else None
        conn.execute(
            "INSERT INTO phases(run_id, id, idx, state, attempts, started, ended, output,"
            " output_file, cached, fallback_used, completed_seq, metadata)"
            " VALUES (?, ?, ?, 'completed', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(run_id, id) DO UPDATE SET state='completed',"
            " attempts=excluded.attempts, started=COALESCE(phases.started, excluded.started),"
            " ended=excluded.ended, output=excluded.output, output_file=excluded.output_file,"
            " error=NULL, cached=excluded.cached, fallback_used=excluded.fallback_used,"
            " completed_seq=COALESCE(phases.completed_seq, excluded.completed_seq),"
            " metadata=excluded.metadata",
            (
                run,
                phase,
                _EXTRA + (seq or 0),
                attempts,
                started,
                ts,
                output_text,
                output_file,
                cached,
                fallback_used,
                seq,
                meta_text,
            ),
        )
    elif kind in ("phase_failed", "phase_skipped"):
        state = str(phase_state(event))
        conn.execute(
            "INSERT INTO phases(run_id, id, idx, state, attempts, ended, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(run_id, id) DO UPDATE SET state=excluded.state,"
            " attempts=MAX(attempts, excluded.attempts), ended=excluded.ended,"
            " error=excluded.error",
            (
                run,
                phase,
                _EXTRA + (seq or 0),
                state,
                int(data.get("attempts") or event.attempt or 0),
                ts,
                note(event),
            ),
        )
    elif kind == "phase_retry":
        nxt = data.get("next_attempt")
        if isinstance(nxt, int) and "item" not in data:  # the attempt about to start
            conn.execute("UPDATE phases SET attempts=? WHERE run_id=? AND id=?", (nxt, run, phase))
    elif kind == "phase_stream":
        if data.get("compensation") == "started":  # saga write-ahead marker
            conn.execute("UPDATE phases SET compensated=-1 WHERE run_id=? AND id=?", (run, phase))
    elif kind == "phase_compensated":
        conn.execute(
            "UPDATE phases SET compensated=?, compensation_error=? WHERE run_id=? AND id=?",
            (int(bool(data.get("ok"))), _text(data.get("error")), run, phase),
        )


def run_record(row: Sequence[Any]) -> RunRecord:
    """A ``runs`` row as a RunRecord (``running`` with a dead owner reads ``interrupted``).

    Raises StateCorrupted naming the run and the row.
    """
    (rid, workflow, path, source_hash, status, started, ended, pid, start, resumes) = row[:10]
    error, outputs, counts, info = row[10:14]
    try:
        owner = Owner(int(pid), start) if pid else None
        if status == "running" and (owner is None or not owner.alive()):
            status = "interrupted"
        info_data = json.loads(info or "{}")
        return RunRecord(
            id=rid,
            workflow=workflow,
            path=path,
            status=status,
            started=float(started),
            ended=float(ended) if ended is not None else None,
            source_hash=source_hash,
            owner=owner,
            resumes=int(resumes),
            error=error,
            outputs=json.loads(outputs) if outputs else None,
            phase_ids=tuple(info_data.get("phases") or ()),
            fingerprints=dict(info_data.get("fingerprints") or {}),
            inputs=dict(info_data.get("inputs") or {}),
            counts=dict(json.loads(counts)) if counts else {},
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise StateCorrupted(
            f"run '{rid}': row '{rid}' of table 'runs' cannot be read ({exc})",
            hint="other runs are still readable; `orch runs` lists them",
        ) from exc


def phase_record(run_id: str, row: Sequence[Any], state_dir: Path) -> PhaseRecord:
    """A ``phases`` row as a PhaseRecord; a spilled output is read from ``state_dir``.

    Raises StateCorrupted naming the run, the phase and the row.
    """
    pid = row[0]
    try:
        output: Any = None
        if row[6]:
            output = json.loads((state_dir / row[6]).read_text(encoding="utf-8"))
        elif row[5] is not None:
            output = json.loads(row[5])
        return PhaseRecord(
            run_id=run_id,
            id=pid,
            state=PhaseState(row[1]),
            attempts=int(row[2] or 0),
            started=row[3],
            ended=row[4],
            output=output,
            error=row[7],
            cached=bool(row[8]),
            fallback_used=bool(row[9]),
            completed_seq=row[10],
            compensated=None if row[11] in (None, -1) else bool(row[11]),
            compensation_started=row[11] is not None,
            compensation_error=row[12],
            metadata=dict(json.loads(row[13])) if row[13] else {},
        )
    except (ValueError, TypeError, OSError) as exc:
        raise StateCorrupted(
            f"run '{run_id}' phase '{pid}': its row in table 'phases' cannot be read ({exc})",
            hint="other runs are still readable; `orch runs` lists them",
        ) from exc
