"""Process trees of the shell agent: find every process a command started, and end them.

A command runs in its own session (so its own process group), and carries a
unique environment tag, ``<run id>/<phase>/<attempt>/<random>``. Ending it
signals the group, every descendant (found by parent pid) and every process
carrying the tag, which also catches grandchildren that called ``setsid`` or
were re-parented. On systems without ``/proc`` only the
group is signalled. ``stop_leftovers`` ends what a killed ``orch`` left behind
of one run (found by the run id at the start of the tag).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["TAG_VARIABLE", "ProcessTree", "leftovers", "stop_leftovers"]

#: The environment variable that marks every process of one command.
TAG_VARIABLE = "ORCH_PROCESS_TAG"
_PROC = Path("/proc")


class ProcessTree:
    """The processes of one command: its leader ``pid`` (also the group id) and its tag."""

    def __init__(self, pid: int, tag: str) -> None:
        self.pid = pid
        self.tag = tag
        self._needle = f"{TAG_VARIABLE}={tag}".encode()

    def members(self) -> set[int]:
        """Pids alive now that belong to this command (the leader included while alive)."""
        if not _PROC.is_dir():
            return set()
        parents: dict[int, int] = {}
        found: set[int] = set()
        for entry in _PROC.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _stat(entry)
            if stat is None or stat[0] == "Z":
                continue
            _, ppid, pgrp = stat
            parents[pid] = ppid
            if pgrp == self.pid or pid == self.pid or self._tagged(entry):
                found.add(pid)
        # descendants of anything found (a child that cleared its environment)
        changed = True
        while changed:
            changed = False
            for pid, ppid in parents.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    changed = True
        found.discard(os.getpid())
        return found

    def _tagged(self, entry: Path) -> bool:
        try:
            return self._needle in (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the group and to every member; vanished processes are ignored.

        Members are found before the group is signalled: once the shell dies its
        children move to init, and one that also left the group and cleared its
        environment could no longer be found by parent or tag.
        """
        before = self.members()
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in before | self.members():
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    async def terminate(self, grace: float) -> None:
        """SIGTERM everything, wait up to ``grace`` seconds, then SIGKILL what is left."""
        self.signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        while loop.time() < end:
            if not self.members() and not _group_alive(self.pid):
                return
            await asyncio.sleep(0.05)
        self.signal(signal.SIGKILL)
        end = loop.time() + 1.0  # SIGKILL cannot be caught: wait for the kernel to reap
        while self.members() and loop.time() < end:
            await asyncio.sleep(0.02)


def _stat(entry: Path) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of one /proc entry, or None if it is gone."""
    try:
        raw = (entry / "stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    if len(rest) < 3:
        return None
    return rest[0], int(rest[1]), int(rest[2])


def _group_alive(pgid: int) -> bool:
    """Whether the group still has a process; with /proc, members() already answered."""
    if _PROC.is_dir():
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def leftovers(run_id: str) -> list[int]:
    """Pids alive now whose tag says they belong to run ``run_id`` (sorted).

    Empty where ``/proc`` is absent. This process and its ancestors are never listed.
    """
    prefix = f"{TAG_VARIABLE}={run_id}/".encode()
    return _carrying(lambda item: item.startswith(prefix))


def _carrying(match: Callable[[bytes], bool]) -> list[int]:
    """Pids alive now with an environment item that ``match``es (sorted); never this
    process or its ancestors; empty without ``/proc``."""
    if not _PROC.is_dir():
        return []
    spared = _ancestors()
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if not any(match(item) for item in environ.split(b"\0")):
            continue
        stat = _stat(entry)
        if stat is not None and stat[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def stop_leftovers(run_id: str, grace: float = 3.0) -> list[int]:
    """SIGTERM every leftover process of run ``run_id``, wait up to ``grace`` seconds,
    then SIGKILL the rest; returns the pids that were found. Never raises."""
    pids = leftovers(run_id)
    if not pids:
        return []
    _send(pids, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and leftovers(run_id):
        time.sleep(0.05)
    if rest := leftovers(run_id):
        _send(rest, signal.SIGKILL)
        end = time.monotonic() + 1.0  # SIGKILL cannot be caught: wait for the kernel
        while time.monotonic() < end and leftovers(run_id):
            time.sleep(0.02)
    return pids


def _send(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _ancestors() -> set[int]:
    """This process and its parents up to init (a resume started from a tagged command)."""
    spared = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        stat = _stat(_PROC / str(pid))
        if stat is None:
            break
        pid = stat[1]
        spared.add(pid)
    return spared
