"""Sinks that show a run: the state they fold events into, the live display, plain lines, JSONL.

Every sink is a cheap synchronous callable taking an Event. ``RunView`` folds
events into per-phase state; ``LiveProgress`` draws that state with rich's Live
(refreshed on its own thread, never by the engine); ``PlainLines`` writes one
greppable timestamped line per event; ``JsonLines`` writes ``Event.to_json()``.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from ..eventlines import (
    approval_note,
    breaker_note,
    format_seconds,
    item_label,
    phase_label,
    retry_wait,
)
from ..eventlines import number as _number
from ..events import Event, note, phase_state, run_status
from ..usage import Usage

__all__ = [
    "STATE_STYLES",
    "breaker_note",
    "waiting_note",
    "JsonLines",
    "LiveProgress",
    "PhaseView",
    "PlainLines",
    "RunView",
    "format_seconds",
    "format_tokens",
]

#: Colour of each phase state (dropped under NO_COLOR).
STATE_STYLES: dict[str, str] = {
    "pending": "dim",
    "running": "cyan",
    "waiting": "blue",
    "completed": "green",
    "failed": "red",
    "skipped": "yellow",
    "cancelled": "magenta",
}
_FINISHED = frozenset({"completed", "failed", "skipped", "cancelled"})
_TAIL_CHARS = 240


@dataclass(slots=True)
class PhaseView:
    """What is known about one phase so far, from its events."""

    id: str
    state: str = "pending"
    agent: str | None = None
    attempt: int = 0
    started: float | None = None
    ended: float | None = None
    duration: float | None = None
    attempts: int = 0
    done: int = 0
    total: int | None = None
    tail: str = ""  # the newest streamed text (a foreach phase: of item ``tail_item``)
    tail_item: str = ""  # ``[2]``: the foreach item that streamed last (eventlines.item_label)
    item_tails: dict[str, str] = field(default_factory=dict)  # a foreach phase: per item
    error: str | None = None
    note: str = ""
    tokens: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    waiting_until: float | None = None  # in a retry's backoff until then (event time)

    @property
    def streamed(self) -> str:
        """The end of what the phase streamed; a foreach phase's per item: ``[0] text``."""
        if not self.item_tails:
            return self.tail
        return "\n".join(f"{label} {text}" for label, text in self.item_tails.items())


class RunView:
    """A run's state folded from its events; the live display and the summary read it.

    Calling the view with an Event updates it (it is a sink). It keeps every
    phase, the running ones in start order, and the last ``keep_finished``
    finished ones, so a 10,000-phase run draws a bounded table.
    """

    def __init__(self, *, keep_finished: int = 50) -> None:
        self.run_id: str | None = None
        self.workflow: str | None = None
        self.order: list[str] = []
        self.phases: dict[str, PhaseView] = {}
        self.running: dict[str, None] = {}
        self.finished: deque[str] = deque(maxlen=keep_finished)
        self.counts: Counter[str] = Counter()
        self.status: str | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.duration: float | None = None
        self.outputs: Any = None
        self.error: str | None = None
        self.tokens: dict[str, Any] = {}
        self.cost: float | None = None
        self.compensated: list[tuple[str, bool]] = []
        #: agent -> (when its circuit breaker opened, until when calls fail at once), event times
        self.breakers: dict[str, tuple[float, float]] = {}
        self.breaker_opens: Counter[str] = Counter()  # agent -> times its breaker opened
        # The workflow's own phases (announced by workflow_started, or given with
        # expect()); handler phases (on_failure, finally...) are shown but not counted.
        self.members: set[str] = set()
        self.member_counts: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        self.apply(event)

    def phase(self, phase_id: str) -> PhaseView:
        """The view of a phase, created as pending on first mention."""
        view = self.phases.get(phase_id)
        if view is None:
            view = self.phases[phase_id] = PhaseView(phase_id)
            self.order.append(phase_id)
        return view

    def expect(self, phase_ids: Iterable[str]) -> None:
        """Declare the workflow's own phases (shown as pending until they start)."""
        for pid in phase_ids:
            view = self.phase(pid)
            if pid not in self.members:
                self.members.add(pid)
                if view.state != "pending":
                    self.member_counts[view.state] += 1

    def is_member(self, phase_id: str) -> bool:
        """Whether a phase is one of the workflow's own (not a handler or the fallback)."""
        return not self.members or phase_id in self.members

    @property
    def handlers(self) -> list[PhaseView]:
        """Phases that ran besides the workflow's own: handlers and the fallback workflow."""
        if not self.members:
            return []
        return [self.phases[pid] for pid in self.order if pid not in self.members]

    @property
    def workflow_counts(self) -> Counter[str]:
        """Phases per state, counting only the workflow's own phases."""
        return self.member_counts if self.members else self.counts

    @property
    def total(self) -> int:
        """How many phases the workflow has (as announced by workflow_started, or seen)."""
        return len(self.members) if self.members else len(self.phases)

    @property
    def finished_count(self) -> int:
        """How many of the workflow's phases have reached a final state."""
        return sum(n for state, n in self.workflow_counts.items() if state in _FINISHED)

    def apply(self, event: Event) -> None:
        """Fold one event into the view. Unknown events are ignored."""
        kind, data = event.event, event.data
        if event.phase is not None and kind.startswith("phase_"):
            self._apply_phase(event, self.phase(event.phase), data)
        elif kind == "breaker_opened":
            wait = _number(data.get("reset_after")) or 0.0
            agent = str(data.get("agent"))
            self.breakers[agent] = (event.ts, event.ts + wait)
            self.breaker_opens[agent] += 1
        elif kind == "workflow_started":
            self.run_id, self.workflow, self.started = event.run_id, data.get("workflow"), event.ts
            self.expect(str(pid) for pid in data.get("phases") or ())
        elif run_status(event) is not None:
            self.run_id = self.run_id or event.run_id
            self.status = run_status(event)
            self.ended = event.ts
            self.duration = _number(data.get("duration"))
            if self.duration is None and self.started is not None:
                self.duration = event.ts - self.started
            self.outputs = data.get("outputs")
            self.error = _text(data.get("error"))
            self.tokens = dict(data.get("tokens") or {})
            cost = data.get("cost")
            self.cost = float(cost) if isinstance(cost, (int, float)) else None

    def _apply_phase(self, event: Event, view: PhaseView, data: dict[str, Any]) -> None:
        kind = event.event
        if kind == "phase_started":
            if view.started is None:
                view.started = event.ts
            view.attempt = event.attempt or view.attempt + 1
            view.agent = data.get("agent", view.agent)
            if data.get("items") is not None:
                view.total = int(data["items"])
                view.done = int(data.get("kept") or 0)  # a resumed run's items from before
            self._set_state(view, "running")
            self.running[view.id] = None
        elif kind == "phase_stream":
            progress = data.get("progress")
            if isinstance(progress, dict):
                view.done = int(progress.get("done") or 0)
                view.total = int(progress.get("total") or 0)
            elif "compensation" in data:
                view.note = "compensating"
            elif "text" in data:
                item = item_label(data)  # parallel items' streams never run into each other
                tail = view.item_tails.get(item, "") if item else view.tail
                view.tail = (tail + str(data["text"]))[-_TAIL_CHARS:]
                view.tail_item = item
                if item:
                    view.item_tails[item] = view.tail
                view.waiting_until = None  # the next attempt is under way
            elif isinstance(data.get("turn"), dict):
                turn = data["turn"]
                view.note = f"turn {turn.get('n')}: {turn.get('agent')}"
        elif kind == "phase_waiting":
            self._set_state(view, "waiting")
            view.note = waiting_note(event)
        elif kind == "phase_iteration":
            view.note = f"iteration {data.get('iteration')} done"
        elif kind == "phase_retry":
            failed = event.attempt or view.attempt or 1
            nxt = _whole(data.get("next_attempt")) or failed + 1
            view.error = _text(data.get("error"))
            item = item_label(data)  # one foreach item's retry: ``[2] attempt 1 failed...``
            view.note = (
                f"{item} " if item else ""
            ) + f"attempt {failed} failed; attempt {nxt} in {retry_wait(data)}"
            if not item:  # the phase's other items run on: neither its attempt nor waiting
                view.attempt = nxt
                wait = _number(data.get("delay"))
                view.waiting_until = event.ts + wait if wait else None
        elif kind == "phase_compensated":
            self.compensated.append((view.id, bool(data.get("ok"))))
            view.note = (
                "compensated" if data.get("ok") else f"compensation failed: {data.get('error')}"
            )
        elif kind in ("phase_completed", "phase_failed", "phase_skipped"):
            state = str(phase_state(event))
            view.ended = event.ts
            view.duration = _number(data.get("duration"))
            view.attempts = int(data.get("attempts") or event.attempt or view.attempt or 0)
            view.attempt = view.attempts or view.attempt
            if kind == "phase_completed":
                view.error = None
                view.note = _completed_note(data, attempts=False)  # attempts has its column
                metadata = data.get("metadata")
                usage = Usage()
                usage.add(metadata if isinstance(metadata, Mapping) else None)
                view.tokens, view.cost = dict(usage.tokens), usage.cost
            elif kind == "phase_failed":
                view.error = note(event)
                view.note = "continue_on_error" if data.get("continue_on_error") else ""
            else:
                view.note = note(event) or ""
            self._set_state(view, state)
            self.running.pop(view.id, None)
            self.finished.append(view.id)

    def _set_state(self, view: PhaseView, state: str) -> None:
        member = view.id in self.members
        if view.state != "pending":
            self.counts[view.state] -= 1
            if member:
                self.member_counts[view.state] -= 1
        view.state = state
        self.counts[state] += 1
        if member:
            self.member_counts[state] += 1

    def cost_total(self) -> float | None:
        """What the run cost (from the final event, else summed from phases); None: unknown."""
        if self.cost is not None:
            return self.cost
        return self._usage().cost

    def token_totals(self) -> dict[str, int]:
        """Token counts of the run (from the final event, else summed from phases)."""
        if self.tokens and any(self.tokens.values()):
            return {k: int(v) for k, v in self.tokens.items() if isinstance(v, (int, float))}
        return dict(self._usage().tokens)

    def _usage(self) -> Usage:
        total = Usage()
        for view in self.phases.values():
            total.add({"tokens": view.tokens, "cost": view.cost})
        return total


class LiveProgress:
    """A rich Live display of a RunView: running phases, the last finished ones, overall progress.

    Use as a context manager around the run. The display refreshes itself
    ``refresh_per_second`` times a second on rich's thread; the sink side
    (``RunView``) only updates dictionaries.
    """

    def __init__(
        self,
        view: RunView,
        console: Console,
        *,
        refresh_per_second: float = 8,
        max_running_rows: int = 20,
    ) -> None:
        self.view = view
        self.console = console
        self.max_running_rows = max_running_rows
        self._spinners: dict[str, Spinner] = {}
        self._live = Live(
            console=console,
            get_renderable=self.render,
            refresh_per_second=refresh_per_second,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveProgress:
        self._live.start(refresh=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Draw the final frame and stop refreshing (safe to call twice)."""
        if self._live.is_started:
            self._live.refresh()
            self._live.stop()

    def render(self, now: float | None = None) -> RenderableType:
        """The current frame. Safe to call while the engine updates the view."""
        for _ in range(3):  # the engine may change the dicts while rich's thread reads them
            try:
                return self._frame(time.time() if now is None else now)
            except RuntimeError:
                continue
        return Text("")

    def _frame(self, now: float) -> RenderableType:
        view = self.view
        running = list(view.running)
        finished = [pid for pid in list(view.finished) if pid not in view.running]
        table = Table.grid(padding=(0, 1))
        table.add_column(width=11, no_wrap=True)  # state
        table.add_column(no_wrap=True, max_width=32)  # phase
        table.add_column(no_wrap=True, justify="right")  # attempt
        table.add_column(no_wrap=True, justify="right")  # elapsed
        table.add_column(no_wrap=True, overflow="ellipsis")  # detail
        # Fit the terminal: running rows first, finished ones in what is left.
        room = max(self.console.size.height - 3, 4)
        shown = min(len(running), self.max_running_rows, room)
        finished = finished[len(finished) - max(min(len(finished), room - shown), 0) :]
        for pid in finished:
            self._row(table, view.phases[pid], now)
        for pid in running[:shown]:
            self._row(table, view.phases[pid], now)
        rows: list[RenderableType] = [table]
        if len(running) > shown:
            rows.append(Text(f"  ... and {len(running) - shown} more running"))
        for agent, (_, until) in list(view.breakers.items()):
            if until > now and view.status is None:  # open now: its agent's calls fail at once
                rows.append(
                    Text(
                        f"  circuit breaker of agent '{agent}' open: calls fail at once"
                        f" for {format_seconds(until - now)}",
                        style=STATE_STYLES["failed"],
                    )
                )
        rows.append(self._overall(now))
        return Group(*rows)

    def _row(self, table: Table, phase: PhaseView, now: float) -> None:
        elapsed = phase.duration
        if elapsed is None and phase.started is not None:
            elapsed = max((phase.ended or now) - phase.started, 0.0)
        keep = max(self.console.width - 50, 16)  # the newest streamed text stays visible
        detail: RenderableType = Text(_detail(phase, keep), style="dim")
        if phase.state == "running" and phase.total:
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                ProgressBar(total=phase.total, completed=phase.done, width=20),
                Text(f"{phase.done}/{phase.total}"),
                Text(_tail_line(phase, keep - 28), style="dim"),
            )
            detail = bar
        state: RenderableType = Text(phase.state, style=STATE_STYLES.get(phase.state, ""))
        waiting = phase.state == "running" and (phase.waiting_until or 0) > now
        if waiting:  # a retry's backoff: nothing runs until the next attempt
            state = Text("waiting", style=STATE_STYLES["waiting"])
            self._spinners.pop(phase.id, None)
        elif phase.state == "running":
            spinner = self._spinners.get(phase.id)
            if spinner is None:
                spinner = self._spinners[phase.id] = Spinner(
                    "dots", text=Text("running", style="cyan"), style="cyan"
                )
            state = spinner
        else:
            self._spinners.pop(phase.id, None)
        table.add_row(
            state,
            Text(phase.id, style="bold" if phase.state == "running" else ""),
            Text(
                f"attempt {phase.attempt} in {format_seconds((phase.waiting_until or now) - now)}"
                if waiting
                else (f"attempt {phase.attempt}" if phase.attempt else "")
            ),
            Text(format_seconds(elapsed) if elapsed is not None else ""),
            detail,
        )

    def _overall(self, now: float) -> RenderableType:
        view = self.view
        total, done = view.total, view.finished_count
        shown = {s: n for s, n in view.workflow_counts.items() if n and s != "pending"}
        pending = total - sum(shown.values())
        if pending > 0 and view.started:  # not started yet: waiting for their dependencies
            shown["pending"] = pending
        counts = ", ".join(f"{n} {state}" for state, n in sorted(shown.items()))
        elapsed = view.duration
        if elapsed is None:
            elapsed = max((view.ended or now) - view.started, 0.0) if view.started else 0.0
        line = Table.grid(padding=(0, 1))
        line.add_row(
            Text(view.workflow or "run", style="bold"),
            ProgressBar(total=max(total, 1), completed=done, width=30),
            Text(f"{done}/{total} phases"),
            Text(format_seconds(elapsed)),
            Text(counts, style="dim"),
        )
        return line


class PlainLines:
    """One timestamped, greppable line per event, for logs: ``HH:MM:SS.mmm phase fetch started``.

    Streamed text is written line by line as ``phase X | text``, a foreach
    item's as ``phase X[2] | text`` (eventlines.phase_label): each item's
    stream is buffered on its own and its partial line written when the item
    ends. Pieces are joined until a newline (an LLM streams a token at a time),
    but a phase's (an item's) partial line is written as its own line when a piece comes more than
    ``hold`` seconds after the partial line started or after a pause of
    ``pause`` seconds, when the phase's handoff turn changes, when another
    phase's stream line is written, and when the phase retries or ends. Times
    are the events' ``ts``, never the wall clock. Foreach progress is written
    at every tenth.
    """

    def __init__(
        self,
        file: TextIO,
        *,
        completed_before: int = 0,
        hold: float = 1.0,
        pause: float = 0.3,
    ) -> None:
        """``completed_before``: phases a resumed run completed before it stopped.

        ``hold``/``pause``: seconds after which a partial streamed line is written
        on its own (see the class docstring).
        """
        self._file: TextIO | None = file
        self._completed_before = completed_before
        self._hold = hold
        self._pause = pause
        # phase_label (the phase, or one foreach item: per_topic[2]) ->
        # (phase, partial line, ts its first piece came, ts its last piece came)
        self._partial: dict[str, tuple[str, str, float, float]] = {}
        self._shown_progress: dict[str, int] = {}
        self._last = float("-inf")  # the time of the last line written

    def __call__(self, event: Event) -> None:
        out = []
        for line in self.lines(event):
            # a held streamed line is stamped with the time its text began, but never
            # before a line already written: the log's times only go forward
            ts = line.ts if isinstance(line, _HeldLine) else event.ts
            self._last = ts = max(ts, self._last)
            stamp = _clock(ts)
            first, *more = line.split("\n")  # multi-line errors: continuation lines indented
            out.append(f"{stamp} {first}\n")
            out.extend(f"{stamp}   {extra}\n" for extra in more)
        if out and self._file is not None:
            self._file = _write(self._file, "".join(out))

    def lines(self, event: Event) -> Iterable[str]:
        """The lines (without timestamp) that an event gives; often one, sometimes none."""
        kind, data, pid = event.event, event.data, event.phase
        if kind == "workflow_started":
            count = len(data.get("phases") or ())
            phases = f"{count} phase{'s' if count != 1 else ''}"
            if data.get("resumed_from"):
                yield (
                    f"workflow {data.get('workflow', '?')} resumed (run {event.run_id}, "
                    f"{phases}, {self._completed_before} already completed)"
                )
            else:
                yield f"workflow {data.get('workflow', '?')} started (run {event.run_id}, {phases})"
        elif kind == "phase_started":
            items = data.get("items")
            extra = f", {items} item{'s' if items != 1 else ''}" if items is not None else ""
            approval = data.get("approval")
            if isinstance(approval, dict) and approval.get("decision"):
                extra += f"; {approval_note(approval)}"
            yield f"phase {pid} started (attempt {event.attempt or 1}{extra})"
        elif kind == "phase_stream":
            yield from self._stream_lines(str(pid), data, event.ts)
        elif kind == "phase_waiting":
            yield f"phase {pid} {waiting_note(event)}"
        elif kind == "phase_iteration":
            until = " (until is true)" if data.get("done") else ""
            yield f"phase {pid} iteration {data.get('iteration')} done{until}"
        elif kind == "phase_retry":
            who = phase_label(str(pid), data)  # a foreach item's retry: that item's
            yield from self._flush_partial(str(pid), None if who == pid else who)
            failed = event.attempt or 1
            nxt = _whole(data.get("next_attempt")) or failed + 1
            yield (
                f"phase {who} attempt {failed} failed: {data.get('error')}; "
                f"attempt {nxt} in {retry_wait(data)}"
            )
        elif kind in ("phase_completed", "phase_failed", "phase_skipped"):
            yield from self._flush_partial(str(pid))
            yield _end_line(str(pid), str(phase_state(event)), data)
        elif kind == "breaker_opened":
            yield f"phase {pid} {breaker_note(data)}"
        elif kind == "phase_compensated":
            if data.get("ok", True):
                yield f"phase {pid} compensated"
            else:
                yield f"phase {pid} compensation failed: {data.get('error')}"
        elif kind.startswith("workflow_"):
            yield from self._flush(self._partial)
            status = run_status(event) or kind.removeprefix("workflow_")
            took = (
                f" in {format_seconds(data.get('duration'))}"
                if data.get("duration") is not None
                else ""
            )
            error = f": {data['error']}" if data.get("error") and status != "completed" else ""
            yield f"workflow {status}{took}{error}"

    def _stream_lines(self, pid: str, data: dict[str, Any], ts: float) -> Iterable[str]:
        progress = data.get("progress")
        who = phase_label(pid, data)  # per_topic[2]: one foreach item's stream apart
        if isinstance(progress, dict):
            if who != pid:  # the item that just ended: its partial line is whole now
                yield from self._flush_partial(pid, who)
            done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
            step = max(total // 10, 1)
            if done == total or done // step > self._shown_progress.get(pid, 0) // step:
                self._shown_progress[pid] = done
                yield f"phase {pid} progress {done}/{total}"
        elif "compensation" in data:  # the saga's write-ahead marker, not agent output
            yield f"phase {pid} compensating"
        elif isinstance(data.get("turn"), dict):
            yield from self._flush_partial(pid, who)  # one turn's text never runs into the next's
            turn = data["turn"]
            nxt = f" -> {turn['next']}" if turn.get("next") else ""
            yield f"phase {who} turn {turn.get('n')}: {turn.get('agent')}{nxt}"
        elif "text" in data:
            held = self._partial.get(who)
            if held is not None and (ts - held[2] > self._hold or ts - held[3] > self._pause):
                yield from self._flush_partial(pid, who)
                held = None
            text, first = (held[1], held[2]) if held is not None else ("", ts)
            *complete, rest = (text + str(data["text"])).split("\n")
            if complete:
                self._partial.pop(who, None)  # its text goes out below, once
                yield from self._flush_others(pid)  # keep each phase's lines whole
                yield _HeldLine(f"phase {who} | {complete[0]}", first)
                for line in complete[1:]:
                    yield f"phase {who} | {line}"
                first = ts
            if rest:
                self._partial[who] = (pid, rest, first, ts)
            else:
                self._partial.pop(who, None)

    def _flush_partial(self, pid: str, who: str | None = None) -> Iterable[str]:
        """Write the held partial line of ``who`` (a phase or one of its foreach items;
        None: all of the phase's), other phases' held lines first: lines never interleave."""
        mine = [w for w, held in self._partial.items() if held[0] == pid and who in (None, w)]
        if mine:
            yield from self._flush_others(pid)
            yield from self._flush(mine)

    def _flush_others(self, pid: str) -> Iterable[str]:
        """Write the held partial lines of the phases other than ``pid``, oldest first.

        The items of a foreach phase keep theirs: each item's line stays whole."""
        yield from self._flush([w for w, held in self._partial.items() if held[0] != pid])

    def _flush(self, labels: Iterable[str]) -> Iterable[str]:
        for label in list(labels):
            _, text, first, _ = self._partial.pop(label)
            if text:
                yield _HeldLine(f"phase {label} | {text}", first)


class _HeldLine(str):
    """A streamed line written later than its text began; ``ts``: when it began."""

    ts: float

    def __new__(cls, text: str, ts: float) -> _HeldLine:
        line = super().__new__(cls, text)
        line.ts = ts
        return line


class JsonLines:
    """``--events jsonl``: one JSON object per event, one per line, flushed at once.

    When the reader goes away (``| head``), the sink stops writing and the run
    goes on to its end: a closed pipe never fails or half-stops a run.
    """

    def __init__(self, file: TextIO, *, completed_before: int = 0) -> None:
        """``completed_before``: phases a resumed run completed before it stopped."""
        self._file: TextIO | None = file
        self._completed_before = completed_before

    def __call__(self, event: Event) -> None:
        if self._file is not None:
            self._file = _write(self._file, event.to_json() + "\n")


def _write(file: TextIO, text: str) -> TextIO | None:
    """Write and flush; on a closed pipe, point the stream at /dev/null and return None."""
    try:
        file.write(text)
        file.flush()
    except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
        _silence(file)
        return None
    return file


def _silence(file: TextIO) -> None:
    # Python flushes stdout again at exit; without this, a closed pipe prints a warning.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, file.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def _end_line(pid: str, status: str, data: dict[str, Any]) -> str:
    if status == "completed":
        note = _completed_note(data)
        return f"phase {pid} completed in {format_seconds(data.get('duration'))}" + (
            f" ({note})" if note else ""
        )
    if status == "skipped":
        reason = data.get("reason")
        return f"phase {pid} skipped" + (f": {reason}" if reason else "")
    if status == "cancelled":
        return f"phase {pid} cancelled after {format_seconds(data.get('duration'))}"
    attempts = data.get("attempts")
    tries = f" after {attempts} attempts" if isinstance(attempts, int) and attempts > 1 else ""
    tolerated = " (continue_on_error)" if data.get("continue_on_error") else ""
    return f"phase {pid} failed{tries}{tolerated}: {data.get('error')}"


def metadata_notes(metadata: Mapping[str, Any]) -> list[str]:
    """What a phase's metadata says about how it ran: the agent chosen at run time
    (``agent x``; a foreach phase: ``agents x x2, y x1``) and a loop's iterations."""
    notes = []
    if isinstance(metadata.get("agent"), str):  # chosen at run time (capability, select)
        notes.append(f"agent {metadata['agent']}")
    spread = metadata.get("agents")  # foreach items routed by capability or select
    if isinstance(spread, Mapping) and spread:
        notes.append("agents " + ", ".join(f"{k} x{v}" for k, v in spread.items()))
    if isinstance(metadata.get("iterations"), int):  # a repeat loop
        n = metadata["iterations"]
        notes.append(f"{n} iteration{'s' if n != 1 else ''}")
        if metadata.get("until_met") is False:
            notes.append("warning: stopped at max, until never true")
    return notes


def _completed_note(data: dict[str, Any], *, attempts: bool = True) -> str:
    """``attempt 2, fallback, cached``: how a phase completed (``attempts``: name the attempt)."""
    metadata = data.get("metadata")
    notes = metadata_notes(metadata if isinstance(metadata, dict) else {})
    count = data.get("attempts")
    if attempts and isinstance(count, int) and count > 1:
        notes.append(f"attempt {count}")
    if data.get("fallback_used"):
        notes.append("fallback")
    if data.get("cached"):
        notes.append("cached")
    return ", ".join(notes)


def _detail(phase: PhaseView, keep: int) -> str:
    if phase.state == "running":
        if phase.note and not phase.tail:
            return phase.note
        return _tail_line(phase, keep)
    if phase.state in ("failed", "cancelled") and phase.error and phase.error != phase.state:
        first = phase.error.splitlines()[0] if phase.error.strip() else phase.error
        # a tolerated failure says so at once, not only in the end summary
        return f"(continue_on_error) {first}" if phase.note == "continue_on_error" else first
    return phase.note


def _tail_line(phase: PhaseView, keep: int) -> str:
    """The newest streamed line; a foreach item's after its index: ``[2] text``."""
    if not phase.tail_item:
        return _last_line(phase.tail, keep)
    return f"{phase.tail_item} {_last_line(phase.tail, keep - len(phase.tail_item) - 1)}"


def _last_line(text: str, keep: int) -> str:
    """The last non-blank line, cut at the front to its last ``keep`` characters."""
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= keep else "…" + last[-max(keep - 1, 1) :]


def _clock(ts: float) -> str:
    local = time.localtime(ts)
    return time.strftime("%H:%M:%S", local) + f".{int(ts * 1000) % 1000:03d}"


def waiting_note(event: Event) -> str:
    """What a phase_waiting event asks, and the commands that decide it."""
    data = event.data
    message = f": {data['message']}" if data.get("message") else ""
    run, phase = event.run_id, event.phase
    return (
        f"waiting for approval{message} (`orch approve {run} {phase}`"
        f" or `orch reject {run} {phase}`)"
    )


def format_tokens(tokens: Mapping[str, Any]) -> str:
    """Token counts for people: ``prompt 3, completion 4, total 7`` (other keys after, sorted)."""
    order = ("prompt", "completion", "total")
    keys = [k for k in order if k in tokens] + sorted(k for k in tokens if k not in order)
    return ", ".join(f"{k} {tokens[k]}" for k in keys)


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
