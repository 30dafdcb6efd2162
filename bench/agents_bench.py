"""Agent overheads: a shell command's start-to-end cost, and http requests with a pooled client.

    python bench/agents_bench.py

The shell agent's time for a 40 ms command is also shown against a plain blocking
``subprocess.run`` of the same command in the same run (the ratio): noticing the
command's exit late (polled, a backoff up to 50 ms) made it about 1.6x; watching
the command's pidfd, about 1.1x (the rest: the event loop's pipes and the process
tree guard).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.agents import AgentContext  # noqa: E402
from orchestrator.agents.builtin.http import HttpAgent  # noqa: E402
from orchestrator.agents.builtin.shell import ShellAgent  # noqa: E402
from tests.servers import HTTPServer, Reply  # noqa: E402


async def shell(command: object, n: int) -> list[float]:
    agent = ShellAgent()
    ctx = AgentContext(run_id="bench", phase_id="p")
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await agent.run({"command": command}, ctx)
        times.append(time.perf_counter() - start)
    return times


def plain(command: list[str], n: int) -> list[float]:
    """The baseline: a blocking ``subprocess.run`` (waitpid notices the exit at once)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(command, check=True)
        times.append(time.perf_counter() - start)
    return times


async def http(url: str, n: int, pooled: bool) -> list[float]:
    ctx = AgentContext(run_id="bench", phase_id="p")
    times = []
    agent = HttpAgent()
    for _ in range(n):
        start = time.perf_counter()
        await agent.run({"url": url}, ctx)
        times.append(time.perf_counter() - start)
        if not pooled:
            await agent.aclose()
            agent = HttpAgent()
    await agent.aclose()
    return times


def show(label: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[int(len(ms) * 0.95)]
    print(f"{label:38} median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms")


def main() -> None:
    show("shell argv ['true'] x200", asyncio.run(shell(["true"], 200)))
    sleep = ["sleep", "0.04"]
    agent = asyncio.run(shell(sleep, 40))
    base = plain(sleep, 40)
    show("shell argv ['sleep', '0.04'] x40", agent)
    show("plain subprocess.run, same x40", base)
    ratio = statistics.median(agent) / statistics.median(base)
    print(f"{'ratio shell agent / plain (medians)':38} {ratio:.2f}x")
    show("shell string 'true' (/bin/sh) x200", asyncio.run(shell("true", 200)))
    with HTTPServer({("GET", "/x"): Reply(200, json={"ok": True})}) as srv:
        show("http GET, pooled client x500", asyncio.run(http(srv.url + "/x", 500, True)))
        show("http GET, new client each x200", asyncio.run(http(srv.url + "/x", 200, False)))


if __name__ == "__main__":
    main()
