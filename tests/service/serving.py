"""The real `orch serve` process for tests: an ephemeral port on 127.0.0.1, real HTTP.

``Serve(tmp_path, workflows={name: yaml})`` writes the workflows into a folder,
starts ``python -m orchestrator serve --port 0`` and reads the address from its
"listening on" line; ``stop()`` sends SIGTERM and returns the exit code. With
``clock=`` the service reads its time from a file (``ORCH_SERVE_CLOCK_FILE``)
that ``set_time`` rewrites: schedules fire without real waiting.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = ["RELEASE", "Serve", "orch", "wait_for"]

#: A workflow whose second phase waits for approval (state `waiting`).
RELEASE = """name: release
triggers:
  - webhook: true
phases:
  - {id: build, agent: echo, with: {text: built}}
  - id: ship
    agent: echo
    depends_on: [build]
    approval: {message: "Ship it?"}
    with: {text: shipped}
outputs:
  result: "{{ phases.ship.output }}"
"""


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (a bound on a hang, not a speed test)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def orch(*args: str, state_dir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `orch` command."""
    env = {**os.environ, "ORCH_STATE_DIR": str(state_dir), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


class Serve:
    """One `orch serve` process (a context manager)."""

    def __init__(
        self,
        root: Path,
        workflows: Mapping[str, str] | None = None,
        *,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        clock: str | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.folder = self.root / "workflows"
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, text in (workflows or {}).items():
            (self.folder / f"{name}.yaml").write_text(text)
        self.state_dir = state_dir or self.root / "state"
        self.clock_file = self.root / "clock.txt"
        if clock is not None:
            self.set_time(clock)
        self.args = args
        self.env = dict(env or {})
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.client: httpx.Client | None = None

    def set_time(self, iso: str) -> None:
        """Move the service's clock (ISO 8601 with an offset)."""
        ts = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(repr(ts))
        tmp.replace(self.clock_file)

    def start(self) -> Serve:
        env = {**os.environ, "ORCH_STATE_DIR": str(self.state_dir), "NO_COLOR": "1", **self.env}
        if self.clock_file.exists():
            env["ORCH_SERVE_CLOCK_FILE"] = str(self.clock_file)
        self.lines = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "serve",
                "--port",
                "0",
                "--workflows",
                str(self.folder),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.root,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        found = wait_for(self._address, "the 'listening on' line", timeout=60)
        self.url = found
        self.client = httpx.Client(base_url=self.url, timeout=30)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _address(self) -> str | None:
        for line in self.lines:
            m = re.search(r"listening on (http://\S+?)/? ", line + " ")
            if m:
                return m.group(1)
        if self.proc is not None and self.proc.poll() is not None:
            time.sleep(0.2)
            raise AssertionError("orch serve exited early:\n" + "\n".join(self.lines))
        return None

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; returns its exit code."""
        if self.client is not None:
            self.client.close()
            self.client = None
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("orch serve did not stop on the signal:\n" + self.log()) from None
        finally:
            self.reader.join(timeout=10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()

    # -- HTTP helpers -----------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def run_when(self, run_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the run has one of ``statuses``; returns it."""

        def check() -> dict[str, Any] | None:
            r = self.http.get(f"/api/runs/{run_id}")
            body = r.json()
            return body if r.status_code == 200 and body["status"] in statuses else None

        return wait_for(check, f"run {run_id} to be {'/'.join(statuses)}", timeout)

    def runs(self, **params: str) -> list[dict[str, Any]]:
        return self.http.get("/api/runs", params=params).json()
