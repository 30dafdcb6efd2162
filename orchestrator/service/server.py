"""Running the service (the only hypercorn import): bind, serve, stop cleanly on a signal.

hypercorn rather than uvicorn: uvicorn requires click, and httpx imports its own
command line (click, rich, pygments) whenever click is installed, so installing
uvicorn would make every http and llm agent load rich and click at start.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .app import create_app

if TYPE_CHECKING:
    from .service import Service

__all__ = ["bind", "run_service"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def run_service(service: Service, sock: socket.socket, *, say: Callable[[str], None]) -> int:
    """Serve until SIGINT or SIGTERM; then stop firing, cancel the runs, return 130 or 143.
    A second signal stops the runs now (each records its end); a third exits at once."""
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 5.0
    stop = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 2:
            say(f"{name} again: exiting now (orch resume finishes what the runs left)")
            sys.exit(130 if received[0] == signal.SIGINT else 143)
        if len(received) == 2:  # each run stops now and records its end, as `orch run`'s
            say(
                f"{name} again: stopping the runs now (compensations and handlers not "
                "started are not run; again to exit now)"
            )
            service.runs.stop_now(signal.Signals(received[0]))
            return
        say(f"{name}: stopping (running runs are cancelled, resumable; again to stop them now)")
        service.stopping = True  # the event streams end: the server waits for them to close
        stop.set()

    where = await service.open_executor()  # UsageError: the scheduler cannot be reached
    if where is not None:
        say(where)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, int(sig))
    await service.run_scheduler()  # before the address is printed: time starts counting here
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    say(f"listening on http://{shown}:{port}/ (max {service.config.max_runs} runs at once)")
    try:
        await serve(create_app(service), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    finally:
        await service.shut_down(signal.Signals(received[0]) if received else signal.SIGTERM)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 130 if received and received[0] == signal.SIGINT else 143
