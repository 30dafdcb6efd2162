"""The scheduler of `orch serve`: fires ``schedule:`` entries by a clock, each fire time once.

Each entry (cron in its time zone, or a one-shot run_at) is identified by its
content (``schedule.entry_key``). The first time the service sees an entry it
records a baseline (the time it was first seen); after that every fire time
it handles gets a row in the store (``schedule_fires``) before the run starts,
so a restart neither skips nor repeats one. After downtime, ``catchup: false``
fires only the latest missed time (the others are recorded as skipped by the
same row's position), ``catchup: true`` fires each missed time (at most 100).
``overlap`` says what happens when a run of the workflow is still queued or
running: skip it (default), queue it after them, allow both, or cancel the
previous runs first.

Time comes from a ``Clock``: ``SystemClock`` in service, ``FileClock`` (the
time written in a file, read on every tick) for tests and demos, so a test can
move time a minute on without waiting a minute.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import one_line
from ..schedule import entry_key, fire_times, format_local, parse_run_at

if TYPE_CHECKING:
    from ..spec.model import Schedule
    from .catalog import Catalog, Entry
    from .runs import ActiveRun, RunManager

__all__ = ["Clock", "FileClock", "Scheduler", "SystemClock", "next_fires", "upcoming"]

log = logging.getLogger("orch.serve")
MAX_CATCHUP = 100


class Clock(Protocol):
    """Seconds since the epoch, and a sleep that a test clock can cut short."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FileClock:
    """The time written in a file (seconds since the epoch, or ISO 8601), read on each call.

    Sleeping polls the file every 20 ms, so a test that writes a later time wakes
    the scheduler at once. Used when ``ORCH_SERVE_CLOCK_FILE`` is set.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def now(self) -> float:
        text = self.path.read_text(encoding="utf-8").strip()
        try:
            return float(text)
        except ValueError:
            return parse_run_at(text)

    async def sleep(self, seconds: float) -> None:
        deadline = self.now() + seconds
        for _ in range(max(1, int(min(seconds, 1.0) / 0.02))):
            await asyncio.sleep(0.02)
            if self.now() >= deadline:
                return


@dataclass(frozen=True, slots=True)
class Due:
    """One fire time of one entry."""

    workflow: str
    entry: str
    fire_time: float
    schedule: Schedule


def _entry_key(s: Schedule) -> str:
    return entry_key(s.cron, s.run_at, s.timezone, dict(s.inputs))


def next_fires(s: Schedule, after: float, count: int = 3) -> list[float]:
    """The next ``count`` fire times of an entry after ``after`` (a past run_at: none)."""
    if s.run_at is not None:
        at = parse_run_at(s.run_at)
        return [at] if at > after else []
    out: list[float] = []
    for ts in fire_times(s.cron or "", s.timezone, after):
        out.append(ts)
        if len(out) >= count:
            break
    return out


def upcoming(entries: list[Entry], now: float, count: int = 3) -> list[dict[str, object]]:
    """For `orch schedule` and the API: each entry with its next fire times, local and UTC."""
    rows: list[dict[str, object]] = []
    for entry in entries:
        wf = entry.workflow
        if wf is None:
            continue
        for i, s in enumerate(wf.schedule):
            times = next_fires(s, now, count)
            rows.append(
                {
                    "workflow": entry.name,
                    "index": i,
                    "cron": s.cron,
                    "run_at": s.run_at,
                    "timezone": s.timezone,
                    "overlap": s.overlap,
                    "catchup": s.catchup,
                    "next": [format_local(t, s.timezone) for t in times],
                    "next_ts": times,
                }
            )
    return rows


class Scheduler:
    """Fires the schedule entries of the catalog's workflows through the run manager."""

    def __init__(
        self,
        catalog: Catalog,
        runs: RunManager,
        clock: Clock,
        *,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.runs = runs
        self.store = runs.store
        self.clock = clock
        self.refresh = refresh  # called on every tick (reload edited files, triggers)
        self.fired = 0
        self.last_tick = 0.0  # the clock's time at the last tick (tests wait for it)

    async def run_forever(self) -> None:
        """Tick until cancelled: wake at the next fire time, at least once a second."""
        while True:
            if self.refresh is not None:
                self.refresh()
            now = self.clock.now()
            soonest = self.tick(now)
            wait = 1.0 if soonest is None else min(1.0, max(0.0, soonest - now))
            await self.clock.sleep(wait)

    def tick(self, now: float) -> float | None:
        """Fire every entry due at ``now``; return the soonest next fire time (None: none)."""
        soonest: float | None = None
        self.last_tick = now
        for entry in self.catalog.served():
            wf = entry.workflow
            assert wf is not None
            for s in wf.schedule:
                key = _entry_key(s)
                try:
                    upcoming_at = self._entry(entry, s, key, now)
                except Exception as exc:  # one bad entry never stops the others
                    log.error("schedule of %s: %s", entry.name, exc)
                    continue
                if upcoming_at is not None and (soonest is None or upcoming_at < soonest):
                    soonest = upcoming_at
        return soonest

    def _entry(self, entry: Entry, s: Schedule, key: str, now: float) -> float | None:
        last = self.store.schedule_last(entry.name, key)
        if last is None:  # first seen: the baseline; nothing before it fires
            self.store.schedule_claim(entry.name, key, now, "baseline", now=now)
            last = now
        if s.run_at is not None:
            at = parse_run_at(s.run_at)
            if last < at <= now:
                self._fire(Due(entry.name, key, at, s), entry, now)
                return None
            return at if at > now else None
        missed: list[float] = []
        for ts in fire_times(s.cron or "", s.timezone, last):
            if ts > now:
                nxt = ts
                break
            missed.append(ts)
            if len(missed) > 10_000:
                missed = missed[-MAX_CATCHUP:]
        else:
            nxt = None
        if missed:
            chosen = missed[-MAX_CATCHUP:] if s.catchup else missed[-1:]
            if len(chosen) < len(missed):
                log.info(
                    "schedule of %s: %d missed fire times not run (catchup: %s)",
                    entry.name,
                    len(missed) - len(chosen),
                    str(s.catchup).lower(),
                )
            for ts in chosen:
                self._fire(Due(entry.name, key, ts, s), entry, now)
        return nxt

    def _fire(self, due: Due, entry: Entry, now: float) -> None:
        from ..engine.inputs import resolve_inputs

        if not self.store.schedule_claim(due.workflow, due.entry, due.fire_time, "firing", now=now):
            return  # handled already (another service on this store)
        self.fired += 1
        when = format_local(due.fire_time, due.schedule.timezone)
        assert entry.workflow is not None and entry.plan is not None
        try:
            inputs = resolve_inputs(entry.workflow, due.schedule.inputs)
        except Exception as exc:
            self._note(due, f"refused: {one_line(exc)}", None)
            log.error("schedule of %s at %s: refused: %s", due.workflow, when, exc)
            return
        previous = self.runs.running(entry.workflow.name)
        overlap = due.schedule.overlap
        wait_for: tuple[ActiveRun, ...] = ()
        if previous and overlap == "skip":
            ids = ", ".join(r.id for r in previous)
            self._note(due, f"skipped: overlap (run {ids} still active)", None)
            log.info("schedule of %s at %s: skipped, %s still active", due.workflow, when, ids)
            return
        if previous and overlap == "cancel_previous":
            for r in previous:
                self.runs.cancel(r.id, signal.SIGTERM)  # the service stops it
        if previous and overlap == "queue":
            wait_for = tuple(previous)
        trigger = {
            "kind": "schedule",
            "fire_time": when,
            "cron": due.schedule.cron,
            "run_at": due.schedule.run_at,
            "timezone": due.schedule.timezone,
        }
        run = self.runs.submit(entry.plan, inputs, trigger=trigger, wait_for=wait_for)
        self._note(due, "started", run.id)
        log.info("schedule of %s at %s: run %s", due.workflow, when, run.id)

    def _note(self, due: Due, outcome: str, run_id: str | None) -> None:
        self.store.schedule_note(due.workflow, due.entry, due.fire_time, outcome, run_id)
