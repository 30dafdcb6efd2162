"""Processes a test starts, ended whatever the test's outcome; their output read with a bound.

The ``processes`` fixture (tests/conftest.py) is a ``Processes``: ``start`` runs a
command in a new session (its group can be signalled as one) and reads its stdout
lines and stderr in threads, so that ``line()`` and ``finish()`` never block past
their bound. ``adopt(state_dir, run_id)`` takes charge of a run no test process is
the parent of (``orch run --detach``). When the test ends, every process still alive
gets SIGTERM (orch cancels cleanly: compensations run, agent commands are stopped),
then SIGKILL, and every command still tagged with one of the runs is stopped
(``ORCH_PROCESS_TAG``, as ``orch resume`` stops a dead owner's leftovers).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["BOUND", "Processes", "Spawned", "holds_open"]

#: Seconds a test waits for a line or an exit before failing: a bound on a hang, not a
#: speed check (nothing asserts how fast anything went).
BOUND = 60.0
#: Seconds a process gets to end cleanly after SIGTERM at teardown, before SIGKILL.
_GRACE = 15.0


class Spawned:
    """One started process: ``proc``; its stdout line by line, its stderr as a whole."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    def line(self, timeout: float = BOUND) -> str | None:
        """The next stdout line; None once the output ended. AssertionError after
        ``timeout`` seconds without one (the process is ended at teardown)."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output from pid {self.pid} within {timeout:g}s; stderr: {self.stderr}"
            ) from None

    def finish(self, timeout: float = BOUND) -> tuple[int, list[str], str]:
        """Wait for the exit: (exit code, the stdout lines not read yet, all of stderr).
        AssertionError when it has not exited within ``timeout`` seconds."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {self.pid} still runs after {timeout:g}s") from None
        for thread in self._threads:
            thread.join(timeout=timeout)
        rest: list[str] = []
        while True:
            try:
                item = self._lines.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        return code, rest, self.stderr

    @property
    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        return "".join(self._err)

    def stop(self) -> None:
        """End it if it still runs: SIGTERM to its group, SIGKILL after a grace."""
        if self.proc.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=_GRACE)
        for thread in self._threads:
            thread.join(timeout=_GRACE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Processes:
    """What one test started; ``close()`` (the fixture's teardown) ends all of it."""

    def __init__(self) -> None:
        self._spawned: list[Spawned] = []
        self._runs: list[tuple[Path, str]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Spawned:
        """Run ``args`` in a new session with piped, text stdout and stderr."""
        proc = subprocess.Popen(
            list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        spawned = Spawned(proc)
        self._spawned.append(spawned)
        return spawned

    def adopt(self, state_dir: Path, run_id: str) -> None:
        """End run ``run_id`` of ``state_dir`` at teardown if it still runs, and stop its
        commands: for runs whose process no test started (``orch run --detach``)."""
        self._runs.append((Path(state_dir), run_id))

    def close(self) -> None:
        """SIGTERM, then SIGKILL, every process and adopted run still going; then stop
        every command left by those runs."""
        for spawned in reversed(self._spawned):
            spawned.stop()
        for state_dir, run_id in self._runs:
            _end_run(state_dir, run_id)


def holds_open(pid: int, path: Path) -> None:
    """Return once process ``pid`` has ``path`` open (read from /proc/PID/fd); AssertionError
    after ``BOUND`` seconds without it (a bound on a hang, not a speed check)."""
    target = os.path.realpath(path)
    end = time.monotonic() + BOUND
    while time.monotonic() < end:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return
            except OSError:
                continue
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} did not open {target} within {BOUND:g}s")


def _signal_group(pgid: int, signum: int) -> None:
    """Signal the group ``pgid`` leads, or the process alone when it leads none."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (an exited child not reaped yet) no longer runs
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _end_run(state_dir: Path, run_id: str) -> None:
    """Cancel a run still going as `orch cancel` would (its owner gets SIGTERM), SIGKILL
    its owner after a grace, then stop every command tagged with the run."""
    from orchestrator.agents.builtin.process import stop_leftovers
    from orchestrator.errors import OrchError
    from orchestrator.runs import status

    try:
        found = status(run_id, state_dir=state_dir)
    except OrchError:
        found = None
    owner = found.run.owner if found is not None and found.status == "running" else None
    if owner is not None and owner.pid != os.getpid() and _alive(owner.pid):
        _signal_group(owner.pid, signal.SIGTERM)  # a detached run leads its own group
        end = time.monotonic() + _GRACE
        while _alive(owner.pid) and time.monotonic() < end:
            time.sleep(0.05)
        if _alive(owner.pid):
            _signal_group(owner.pid, signal.SIGKILL)
    stop_leftovers(run_id)
