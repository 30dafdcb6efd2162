"""Agent calls on Dask workers (``orch run --executor dask``): the only module that imports Dask.

The orch process stays the scheduler and the owner of the run: retries, timeouts,
rate limits, circuit breakers, the cache, events and the state store work there
as they do locally. Only the agent call itself is shipped, as plain data (the
agent type, the instance name, the rendered input and a few context fields), to
``run_on_worker`` on a worker, which rebuilds the agent from the same entry
points, runs it, streams its pieces back through Dask's event topics
(``Worker.log_event`` -> ``Client.subscribe_topic``) and returns a plain dict.

Failures map to the engine's terms: a worker that dies during a call is a
transient ``AgentFailure`` (the phase's retries decide); a lost scheduler
connection a permanent one naming the address (the run can be resumed); a
phase asking for resources no worker offers fails after ``resource_wait``.
Cancelling a call (phase timeout, fail-fast, Ctrl-C) cancels its Dask task;
the worker sees that and cancels the agent, which ends a shell command's whole
process tree there.

Dask is imported only when an executor is opened or a call runs on a worker:
``import orchestrator.engine.dask_executor`` itself stays cheap and works
without the ``dask`` extra installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import os
import pickle
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..agents.base import Agent, AgentFailure, AgentResult
from ..errors import OrchError, UsageError
from ..extras import install_command, missing_module
from .executor import CallChannel, CallSpec
from .result import json_data

__all__ = [
    "DEFAULT_RESOURCE_WAIT",
    "DaskExecutor",
    "ExecutorChoice",
    "open_executor",
    "parse_executor",
    "run_on_worker",
]

#: seconds a phase waits for a worker offering its resources before it fails
DEFAULT_RESOURCE_WAIT = 30.0
# how often a worker checks whether the orch process cancelled the call
_CANCEL_POLL = 0.1
# how long the orch process waits for stream pieces still in flight after a result
_STREAM_GRACE = 10.0
# seconds the workers are given to close the agents of an executor that closes
_CLOSE_WAIT = 10.0
# seconds to reach a scheduler given by address (a refused connection fails at once)
_CONNECT_TIMEOUT = 10.0
# calls submitted in one graph at most (the rest follow in the next turn of the loop)
_SUBMIT_BATCH = 256
# a call whose task is no longer in one of these states on its worker was cancelled
_RUNNING = frozenset({"executing", "long-running"})


@dataclass(frozen=True, slots=True)
class ExecutorChoice:
    """Where agent calls run: ``address`` of an existing scheduler, or None for a
    LocalCluster started for the run (``workers`` processes, ``threads`` each)."""

    address: str | None = None
    workers: int | None = None
    threads: int | None = None
    resource_wait: float = DEFAULT_RESOURCE_WAIT

    def describe(self) -> str:
        """``dask (tcp://host:port)`` or ``dask (local cluster)``, for messages."""
        return f"dask ({self.address})" if self.address else "dask (local cluster)"


def parse_executor(
    text: str | None, environ: Mapping[str, str] | None = None
) -> ExecutorChoice | None:
    """``--executor``: None or ``local`` -> None (in-process); ``dask`` -> a LocalCluster,
    or the cluster at ``$DASK_SCHEDULER_ADDRESS`` when that is set; ``dask://HOST:PORT``
    (or ``tcp://``, ``tls://``) -> that scheduler.

    ``ORCH_DASK_WORKERS``, ``ORCH_DASK_THREADS`` size the LocalCluster and
    ``ORCH_DASK_RESOURCE_WAIT`` (seconds) bounds the wait for resources.
    Raises UsageError (exit 2) for anything else, or when Dask is not installed.
    """
    env = os.environ if environ is None else environ
    value = (text or "local").strip()
    if value == "local":
        return None
    if value == "dask":
        address = env.get("DASK_SCHEDULER_ADDRESS", "").strip() or None
    elif value.startswith("dask://"):
        address = "tcp://" + value[len("dask://") :]
    elif value.startswith(("tcp://", "tls://")):
        address = value
    else:
        raise UsageError(
            f"unknown executor '{value}'",
            hint="use --executor local (the default), dask, or dask://HOST:PORT",
        )
    if address is not None and not address.split("://", 1)[1].strip("/"):
        raise UsageError(f"--executor '{value}' names no scheduler", hint="write dask://HOST:PORT")
    missing = missing_module("dask")
    if missing is not None:
        raise UsageError(
            f"--executor {value} needs Dask, which is not installed ({missing} is missing)",
            hint=f"install the extra: {install_command('dask')}",
        )
    return ExecutorChoice(
        address,
        _count(env, "ORCH_DASK_WORKERS"),
        _count(env, "ORCH_DASK_THREADS"),
        _seconds(env, "ORCH_DASK_RESOURCE_WAIT", DEFAULT_RESOURCE_WAIT),
    )


async def _probe(address: str, timeout: float) -> None:
    """Open and close one TCP connection to a ``tcp://HOST:PORT`` scheduler.

    Dask's Client retries a refused connection until its timeout, so a wrong address
    (nothing listens there) took the whole timeout to be told; here it raises OSError
    at once. A host that does not answer raises OSError after ``timeout`` seconds,
    as the Client would. A ``tls://`` address is not probed (the scheduler would log a
    bare connection as a failed TLS handshake); without Dask's TLS settings it is a
    UsageError. Other schemes are left to the Client.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address, strict=False)
        host, port = parse_host_port(location)
    except ValueError:
        return  # the Client says what is wrong with it
    if scheme == "tls":
        import distributed.security

        # distributed has no type hints: its classes are used as Any
        Security: Any = distributed.security.Security
        if Security().get_connection_args("client").get("ssl_context") is None:
            raise UsageError(  # the Client raised a TypeError
                f"cannot connect to the Dask scheduler at {address}: tls:// needs Dask's "
                "TLS settings, and none are set",
                hint="set distributed.comm.tls.ca-file, distributed.comm.tls.client.cert "
                "and .key in Dask's configuration, or use dask://HOST:PORT",
            )
        return
    if scheme != "tcp":
        return
    try:
        await asyncio.wait_for(_connect_any(host, port), timeout)
    except ConnectionRefusedError:
        raise OSError("connection refused (nothing listens on that port)") from None
    except (TimeoutError, asyncio.TimeoutError):
        raise OSError(f"no answer within {timeout:g} s") from None


async def _connect_any(host: str, port: int) -> None:
    """Connect to (and close at once) the first address of ``host`` that accepts.

    Each address ``host`` resolves to is tried in turn (``localhost``: ::1, then
    127.0.0.1); when all of them refuse, ConnectionRefusedError, as for one address
    (asyncio's own loop would raise a bare ``OSError('Multiple exceptions: ...')``);
    otherwise the first error that is not a refusal. A name that does not resolve
    raises socket.gaierror (an OSError).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                errors.append(exc)
                continue
            return
    refusals = [exc for exc in errors if isinstance(exc, ConnectionRefusedError)]
    if len(refusals) == len(errors):
        raise ConnectionRefusedError(f"{host}:{port}: connection refused")
    raise next(exc for exc in errors if not isinstance(exc, ConnectionRefusedError))


def _count(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{name}='{raw}' is not a whole number of at least 1")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"{name}='{raw}' is not a number of seconds (0 or more)")
    return value


async def open_executor(choice: ExecutorChoice) -> DaskExecutor:
    """Start (or connect to) the cluster of ``choice``; close the result with ``aclose``.

    Raises UsageError when the scheduler cannot be reached.
    """
    executor = DaskExecutor(choice)
    await executor.start()
    return executor


@contextlib.asynccontextmanager
async def opened(
    choice: ExecutorChoice, notify: Callable[[str], None] | None = None
) -> AsyncIterator[DaskExecutor]:
    """``open_executor`` for the length of a ``with`` block; ``notify`` hears where calls run."""
    executor = await open_executor(choice)
    try:
        if notify is not None:
            notify(await executor.describe())
        yield executor
    finally:
        await executor.aclose()


class _Call:
    """One call under way in the orch process: its stream pieces and how it ended."""

    __slots__ = ("queue", "received")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.received = 0


class _WorkerDied:
    __slots__ = ("address",)

    def __init__(self, address: str) -> None:
        self.address = address


_DONE = object()


class DaskExecutor:
    """Runs agent calls on a Dask cluster; one per run (or per process in the service).

    ``call`` is the executor seam: plain data in, an AgentResult out, stream
    pieces handed to ``ctx.stream`` while the call runs.
    """

    def __init__(self, choice: ExecutorChoice) -> None:
        self.choice = choice
        self.client: Any = None
        self.cluster: Any = None
        self.topic = f"orch-stream-{uuid.uuid4().hex[:12]}"
        self._calls: dict[str, _Call] = {}
        self._chores: set[asyncio.Task[Any]] = set()
        self._keys = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        # calls made in one turn of the event loop are submitted together (one graph),
        # and results finished together are gathered together (one round trip)
        self._outbox: list[tuple[str, tuple[Any, ...], tuple[tuple[str, float], ...]]] = []
        self._submitted: dict[str, asyncio.Future[Any]] = {}
        self._fetching: list[tuple[Any, asyncio.Future[Any]]] = []
        self._refs: dict[type, _AgentRef] = {}

    @property
    def address(self) -> str:
        """The scheduler's address (the LocalCluster's once started)."""
        if self.client is not None:
            return str(self.client.scheduler.address)
        return self.choice.address or "a local cluster"

    async def describe(self) -> str:
        """Where calls run, one line: the cluster's address and its workers."""
        found = await self._workers()
        workers = len(found)
        threads = sum(int(w.get("nthreads", 0)) for w in found)
        kind = "a local Dask cluster" if self.cluster is not None else "the Dask cluster"
        return (
            f"agent calls run on {kind} at {self.address}: "
            f"{workers} worker{'s' if workers != 1 else ''}, {threads} threads"
        )

    async def start(self) -> None:
        """Connect to the scheduler, or start a LocalCluster of worker processes."""
        import dask
        import distributed

        # distributed has no type hints: its classes are used as Any
        Client: Any = distributed.Client
        LocalCluster: Any = distributed.LocalCluster

        choice = self.choice
        try:
            if choice.address is None:
                workers = choice.workers or max(1, os.cpu_count() or 1)
                # A worker that dies during a call fails that attempt (the phase's retries
                # decide), instead of Dask silently running the call again elsewhere.
                # Calls go to the workers when submitted, not when a thread frees up:
                # the scheduler shares this process's event loop with the run, and its
                # queuing of root tasks left workers idle (2x the makespan of 10,000
                # noops). Calls hold no data for other tasks, so queuing saves nothing;
                # work stealing still evens out the workers.
                with dask.config.set(
                    {
                        "distributed.scheduler.allowed-failures": 0,
                        "distributed.scheduler.worker-saturation": float("inf"),
                    }
                ):
                    self.cluster = await LocalCluster(
                        n_workers=workers,
                        threads_per_worker=choice.threads or 4,
                        processes=True,
                        asynchronous=True,
                        dashboard_address=None,
                        silence_logs=50,  # CRITICAL: a killed worker is reported as a phase error
                    )
                self.client = await Client(self.cluster, asynchronous=True)
                await self.client.wait_for_workers(workers)
            else:
                await _probe(choice.address, _CONNECT_TIMEOUT)
                self.client = await Client(
                    choice.address,
                    asynchronous=True,
                    timeout=_CONNECT_TIMEOUT,
                    set_as_default=False,
                )
        except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
            await self.aclose()
            raise UsageError(
                f"cannot reach the Dask scheduler at {choice.address}: {exc}",
                hint="start one with `dask scheduler`, or use --executor dask for a local cluster",
            ) from None
        self.client.subscribe_topic(self.topic, self._on_piece)
        self.client.subscribe_topic("all", self._on_cluster_event)
        await self.client.register_plugin(_agent_closer())

    async def aclose(self) -> None:
        """Disconnect; a LocalCluster started for the run is shut down."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            try:
                # the agents its calls made on the workers release what they hold (an http
                # agent's connections), as a local run's agents do at its end; a lost
                # scheduler or worker is not waited for (the plugin closes them there)
                if client.status == "running":
                    await asyncio.wait_for(
                        client.run(_close_worker_agents, self.topic), _CLOSE_WAIT
                    )
            except Exception:  # noqa: BLE001 - a lost scheduler must not hide the run's result
                pass
            try:
                for topic in (self.topic, "all"):  # nothing is sent to a closed client
                    client.unsubscribe_topic(topic)
                await client.close()
            except Exception:  # noqa: BLE001 - a lost scheduler must not hide the run's result
                pass
        if cluster is not None:
            try:
                await cluster.close()
            except Exception:  # noqa: BLE001 - see above
                pass

    # -- events from the scheduler ---------------------------------------------------
    def _on_piece(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        call = self._calls.get(str(msg.get("k"))) if isinstance(msg, dict) else None
        if call is not None:
            call.received += 1
            call.queue.put_nowait(msg.get("t", ""))

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        if msg.get("expected"):
            return  # a worker retired on purpose hands its tasks back first
        for key in msg.get("processing-tasks") or ():
            call = self._calls.get(key)
            if call is not None:
                call.queue.put_nowait(_WorkerDied(str(msg.get("worker", "?"))))

    # -- the seam -----------------------------------------------------------------------
    async def call(self, spec: CallSpec, channel: CallChannel) -> AgentResult:
        """Run one agent call on a worker, streaming into ``channel``; the Executor seam.

        An agent type marked ``runs_in_orch`` (the workflow agent) runs here, on the
        run's own instance. Raises AgentFailure as a local call would; CancelledError
        cancels the task on its worker.
        """
        if getattr(channel.agent, "runs_in_orch", False):
            result: AgentResult = await channel.agent.run(spec.input, spec.context(channel))
            return result
        client = self.client
        if client is None:
            raise AgentFailure("the Dask executor is closed", transient=False)
        if spec.resources:
            await self._wait_for_resources(spec.resources)
        # secrets reach a worker only inside the rendered input that needs them
        wire = replace(spec, input=dict(spec.input), secrets={}, resources=dict(spec.resources))
        key = f"orch-{spec.phase_id}-{self._prefix}-{next(self._keys)}"
        call = self._calls[key] = _Call()
        future: Any = None
        waiter: asyncio.Future[Any] | None = None
        try:
            future = await self._submit(
                key,
                (wire, self.topic, key, self._ref(channel.agent)),
                tuple(sorted(spec.resources.items())),
            )
            waiter = asyncio.ensure_future(self._outcome(future))
            waiter.add_done_callback(lambda _: call.queue.put_nowait(_DONE))
            while True:
                piece = await call.queue.get()
                if piece is _DONE:
                    break
                if isinstance(piece, _WorkerDied):
                    raise AgentFailure(
                        f"the Dask worker {piece.address} died during the call", transient=True
                    )
                await channel.stream(piece)
            reply = self._reply(waiter, spec.run_id)
            await self._drain(call, int(reply.get("streamed", 0)), channel)
            return _result(reply)
        finally:
            self._calls.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.cancel()
            if future is not None and not future.done():
                self._chore(client.cancel([future], reason="orch cancelled the call"))

    def _ref(self, agent: Any) -> _AgentRef:
        """How a worker finds the class of the run's agent ``agent`` (made once per class)."""
        cls = type(agent)
        ref = self._refs.get(cls)
        if ref is None:
            ref = self._refs[cls] = _AgentRef.of(cls)
        return ref

    async def _submit(
        self, key: str, args: tuple[Any, ...], resources: tuple[tuple[str, float], ...]
    ) -> Any:
        """The Dask future of ``run_on_worker(*args)``; submitted with the other calls
        made in this turn of the event loop, as one graph per set of resources."""
        submitted = asyncio.get_running_loop().create_future()
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append((key, args, resources))
        self._submitted[key] = submitted
        try:
            return await submitted
        except asyncio.CancelledError:
            if submitted.done() and not submitted.cancelled():  # submitted, then cancelled
                self._chore(self.client.cancel([submitted.result()], reason="orch cancelled"))
            raise
        finally:
            self._submitted.pop(key, None)

    def _flush(self) -> None:
        # a few hundred at a time: the scheduler starts the first calls while this
        # process makes the next graph (one graph of 10,000 kept every worker idle
        # for seconds while the scheduler took it in)
        outbox, self._outbox = self._outbox[:_SUBMIT_BATCH], self._outbox[_SUBMIT_BATCH:]
        if self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        groups: dict[tuple[tuple[str, float], ...], list[tuple[str, tuple[Any, ...]]]] = {}
        for key, args, resources in outbox:
            if key in self._submitted:  # not cancelled meanwhile
                groups.setdefault(resources, []).append((key, args))
        for resources, calls in groups.items():
            keys = [key for key, _ in calls]
            try:
                futures = self.client.map(
                    run_on_worker,
                    *zip(*(args for _, args in calls), strict=True),
                    key=keys,
                    pure=False,
                    retries=0,
                    resources=dict(resources) or None,
                )
            except Exception as exc:  # noqa: BLE001 - a closed client: each call fails
                for key in keys:
                    self._settle(self._submitted.get(key), exception=exc)
                continue
            for key, future in zip(keys, futures, strict=True):
                self._settle(self._submitted.get(key), future)

    async def _outcome(self, future: Any) -> Any:
        """The task's result once it finished, fetched with the others finished meanwhile."""
        import distributed

        wait: Any = distributed.wait
        try:
            await wait([future])
        except Exception:  # noqa: BLE001 - cancelled: the result below says how
            pass
        if future.status != "finished":
            return await future.result()  # raises the task's error (or its cancellation)
        fetched = asyncio.get_running_loop().create_future()
        if not self._fetching:
            self._chore(self._fetch())
        self._fetching.append((future, fetched))
        return await fetched

    async def _fetch(self) -> None:
        """Gather every finished result asked for, in one round trip (one each on failure)."""
        await asyncio.sleep(0)  # let the results finished in this turn join
        batch, self._fetching = self._fetching, []
        try:
            # Straight from the workers only on the cluster orch started here: workers of
            # another cluster may be reachable only through its scheduler (dask-gateway,
            # Kubernetes), where a direct fetch waits for the connect timeout first.
            direct = True if self.cluster is not None else None
            values = await self.client.gather([future for future, _ in batch], direct=direct)
        except Exception:  # noqa: BLE001 - one lost result: ask for each on its own
            for future, fetched in batch:
                try:
                    self._settle(fetched, await future.result())
                except Exception as exc:  # noqa: BLE001 - handed to the call
                    self._settle(fetched, exception=exc)
            return
        for (_, fetched), value in zip(batch, values, strict=True):
            self._settle(fetched, value)

    @staticmethod
    def _settle(
        waiter: asyncio.Future[Any] | None,
        value: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if waiter is None or waiter.done():
            return
        if exception is not None:
            waiter.set_exception(exception)
        else:
            waiter.set_result(value)

    def _again(self) -> str:
        """The ``--executor`` value that reaches this cluster again (``orch resume``)."""
        if self.cluster is not None or self.choice.address is None:
            return "dask"  # a local cluster: resuming starts a new one
        return self.choice.address

    def _reply(self, waiter: asyncio.Future[Any], run_id: str) -> dict[str, Any]:
        """The worker's plain reply, or the Dask failure mapped to an AgentFailure."""
        try:
            reply = waiter.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Dask's failures, mapped below
            raise self._failure(exc, run_id) from None
        if isinstance(reply, bytes):
            reply = pickle.loads(reply)  # noqa: S301 - our own workers' reply
        if not isinstance(reply, dict):
            raise AgentFailure(f"a Dask worker returned {type(reply).__name__}", transient=False)
        if reply.get("missing"):
            reply["error"] = f"{reply.get('error')}; {_what_to_install(str(reply['missing']))}"
        return reply

    def _failure(self, exc: BaseException, run_id: str) -> AgentFailure:
        """One of Dask's exceptions as the engine's failure (transient or not)."""
        name = type(exc).__name__
        if name == "KilledWorker":
            worker = getattr(getattr(exc, "last_worker", None), "address", "?")
            return AgentFailure(f"the Dask worker {worker} died during the call", transient=True)
        client = self.client
        lost = client is None or client.status not in ("running", "newly-created")
        if name in ("FutureCancelledError", "CancelledError") or lost:
            return AgentFailure(
                f"lost the connection to the Dask scheduler at {self.address}; "
                f"the run can be resumed (orch resume {run_id} --executor {self._again()}) "
                "once the cluster is back",
                transient=False,
            )
        if isinstance(exc, ImportError) and "orchestrator" in str(exc):
            return AgentFailure(
                f"orch is not installed on a Dask worker: {exc}; install orch (with the "
                "agent types the workflow uses) where the workers run",
                transient=False,
            )
        return AgentFailure(f"the Dask worker failed the call: {name}: {exc}", transient=False)

    async def _drain(self, call: _Call, streamed: int, channel: CallChannel) -> None:
        """Hand on stream pieces still in flight when the result came (they travel apart)."""
        end = time.monotonic() + _STREAM_GRACE
        while call.received < streamed or not call.queue.empty():
            try:
                piece = await asyncio.wait_for(call.queue.get(), max(0.0, end - time.monotonic()))
            except asyncio.TimeoutError:
                return
            if isinstance(piece, str):
                await channel.stream(piece)

    async def _wait_for_resources(self, resources: Mapping[str, float]) -> None:
        """Return once a worker offers ``resources``; fail after ``resource_wait`` seconds."""
        end = time.monotonic() + self.choice.resource_wait
        while True:
            offered = [dict(w.get("resources") or {}) for w in await self._workers()]
            if any(all(r.get(k, 0) >= v for k, v in resources.items()) for r in offered):
                return
            if time.monotonic() >= end:
                wanted = ", ".join(f"{k}={_number(v)}" for k, v in resources.items())
                have = "; ".join(
                    ", ".join(f"{k}={_number(v)}" for k, v in r.items()) for r in offered if r
                )
                raise AgentFailure(
                    f"no Dask worker offers the resources {wanted} "
                    f"(waited {_number(self.choice.resource_wait)}s; "
                    f"workers offer: {have or 'no resources'}); start one with "
                    f'`dask worker {self.address} --resources "{wanted.replace(", ", ",")}"`',
                    transient=False,
                )
            await asyncio.sleep(0.2)

    async def _workers(self) -> list[dict[str, Any]]:
        """What the scheduler knows of each worker now (address, nthreads, resources)."""
        info = await self.client.scheduler.identity(n_workers=-1)
        return list((info.get("workers") or {}).values())

    def _chore(self, coro: Any) -> None:
        """Run ``coro`` in the background (a cancel message), keeping a reference to it."""
        if not asyncio.iscoroutine(coro) and not isinstance(coro, asyncio.Future):
            return
        task = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[Any]) -> None:
        self._chores.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a lost scheduler makes cancel fail, which is fine


def _what_to_install(module: str) -> str:
    """What makes ``module`` importable on a worker: the distribution that provides it
    here (an agent plugin's entry point, else any installed distribution), looked up
    only when a worker lacks it; else the module itself."""
    import importlib.metadata

    from ..agents.registry import ENTRY_POINT_GROUP, read_entry_points

    top = module.split(".", 1)[0]
    dists = {
        ep.dist.name
        for ep in read_entry_points(ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.value.split(":", 1)[0].split(".", 1)[0] == top
    } or set(importlib.metadata.packages_distributions().get(top) or ())
    if dists:
        return f"install {' and '.join(sorted(dists))} where that worker runs (as here)"
    return (
        f"make the module '{module}' importable where that worker runs (install the "
        "package that provides it, or put its folder on the worker's PYTHONPATH)"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _result(reply: Mapping[str, Any]) -> AgentResult:
    """The AgentResult (or the AgentFailure raised) of a worker's reply."""
    metadata = dict(reply.get("metadata") or {})
    metadata["worker"] = reply.get("worker")
    if reply.get("ok"):
        return AgentResult(reply.get("output"), metadata, reply.get("handoff"))
    raise AgentFailure(
        str(reply.get("error")),
        transient=bool(reply.get("transient")),
        retry_after=reply.get("retry_after"),
        metadata=metadata,
    )


# -- the worker side ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _AgentRef:
    """How a worker finds the class of an agent type the run resolved (from its entry
    points or a registry given to the run): ``module:qualname``, imported there as an
    entry point is, or the pickled class itself when no worker could import it by
    name (a class defined in ``__main__`` or inside a function)."""

    type_name: str
    module: str
    qualname: str
    pickled: bytes | None = None

    @classmethod
    def of(cls, agent_cls: type) -> _AgentRef:
        module, qualname = agent_cls.__module__, agent_cls.__qualname__
        pickled = None
        if module == "__main__" or "<locals>" in qualname:
            from distributed.protocol import pickle

            dumps: Any = pickle.dumps
            pickled = bytes(dumps(agent_cls))  # by value (cloudpickle)
        return cls(str(getattr(agent_cls, "name", "") or qualname), module, qualname, pickled)

    def load(self) -> type[Agent]:
        """The class, imported (or unpickled) in this process; raises what that raises."""
        if self.pickled is not None:
            from distributed.protocol import pickle

            loads: Any = pickle.loads
            loaded: Any = loads(self.pickled)
        else:
            loaded = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                loaded = getattr(loaded, part)
        if not isinstance(loaded, type) or not issubclass(loaded, Agent):
            raise TypeError(f"{self.module}:{self.qualname} is not an agent class here")
        return loaded


# the agent instances of this worker process, by executor (its stream topic), class and
# instance name: made on the first call and kept, so their pooled connections serve the
# calls that follow; closed (``aclose``) when their executor closes, or the worker does
_WORKER_AGENTS: dict[tuple[str, _AgentRef, str], Agent] = {}


async def _close_worker_agents(owner: str | None = None) -> int:
    """Close this worker's agents made for the executor ``owner`` (every one: None), as a
    local run closes its agents at its end; returns how many. An agent's failing
    ``aclose`` does not keep the others open."""
    keys = [key for key in _WORKER_AGENTS if owner is None or key[0] == owner]
    for key in keys:
        agent = _WORKER_AGENTS.pop(key)
        with contextlib.suppress(Exception):
            await agent.aclose()
    return len(keys)


def _agent_closer() -> Any:
    """The worker plugin that closes a worker's agents when the worker shuts down (the orch
    process that made them may be gone: killed, or its scheduler connection lost). It is
    ``idempotent``: an executor registering it again does not replace (tear down) the one
    in place, which would close agents another executor's calls are using. Made here, as
    Dask is imported only once it is used (a class of a function: pickled by value)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class AgentCloser(WorkerPlugin):
        idempotent = True
        name = "orch-agents"

        async def teardown(self, worker: Any) -> None:
            await _close_worker_agents()

    return AgentCloser()


def _worker_agent(owner: str, ref: _AgentRef, name: str, address: str) -> Agent | dict[str, Any]:
    """This worker's instance of agent ``name`` of ``ref`` for the executor ``owner``, or
    the failed reply saying why the type cannot be used here (and what to install)."""
    agent = _WORKER_AGENTS.get((owner, ref, name))
    if agent is not None:
        return agent
    try:
        agent = _WORKER_AGENTS[(owner, ref, name)] = ref.load()(name)
    except ImportError as exc:
        missing = exc.name or ref.module
        return {
            "ok": False,
            "transient": False,
            "missing": missing,
            "error": f"agent type '{ref.type_name}' ({ref.module}:{ref.qualname}) cannot be "
            f"used on the Dask worker {address}: {type(exc).__name__}: {exc}",
        }
    except Exception as exc:  # noqa: BLE001 - a plugin's import or constructor may raise anything
        return {
            "ok": False,
            "transient": False,
            "error": f"agent type '{ref.type_name}' ({ref.module}:{ref.qualname}) cannot be "
            f"used on the Dask worker {address}: {type(exc).__name__}: {exc}",
        }
    return agent


async def run_on_worker(spec: CallSpec, topic: str, key: str, ref: _AgentRef) -> bytes:
    """Run one agent call on this Dask worker, in its event loop; the reply is a plain
    dict, pickled (Dask sizes and serializes bytes at once, a dict item by item).

    Never raises for a failing agent: ``ok`` false with ``error``, ``transient``
    and ``retry_after``, as the orch process turns them back into an AgentFailure.
    """
    from distributed import get_worker

    return pickle.dumps(await _call_on_worker(spec, topic, key, ref, get_worker()), protocol=5)


async def _call_on_worker(
    spec: CallSpec, topic: str, key: str, ref: _AgentRef, worker: Any
) -> dict[str, Any]:
    address = str(worker.address)
    streamed = 0
    reply: dict[str, Any] = {"worker": address}

    async def send(text: str) -> None:
        nonlocal streamed
        streamed += 1
        worker.log_event(topic, {"k": key, "t": text})

    agent = _worker_agent(topic, ref, spec.agent_name, address)
    if isinstance(agent, dict):
        reply.update(agent)
        return reply
    # sub-runs stay in the orch process (the workflow agent runs there)
    ctx = spec.context(CallChannel(send, None, agent))
    work = asyncio.ensure_future(agent.run(spec.input, ctx))
    watch = asyncio.ensure_future(_watch_cancel(worker, key, work))
    try:
        result = await work
    except asyncio.CancelledError:
        reply.update(ok=False, transient=False, error="cancelled")
    except AgentFailure as exc:
        reply.update(
            ok=False,
            transient=exc.transient,
            retry_after=exc.retry_after,
            error=exc.headline,  # one line, as a local call's error (call.describe)
            metadata=json_data(exc.metadata),
        )
    except OrchError as exc:
        reply.update(ok=False, transient=False, error=exc.headline)
    except Exception as exc:  # noqa: BLE001 - a failing agent is a failed call, retried as an error
        text = str(exc)
        reply.update(
            ok=False,
            transient=True,
            error=f"{type(exc).__name__}: {text}" if text else type(exc).__name__,
        )
    else:
        if isinstance(result, AgentResult):
            reply.update(
                ok=True,
                output=json_data(result.output),
                metadata=json_data(result.metadata),
                handoff=result.handoff,
            )
        else:
            reply.update(ok=True, output=json_data(result))
    finally:
        watch.cancel()
    reply["streamed"] = streamed
    return reply


async def _watch_cancel(worker: Any, key: Any, work: asyncio.Future[Any]) -> None:
    """Cancel ``work`` once the orch process cancelled (or forgot) this task."""
    while not work.done():
        await asyncio.sleep(_CANCEL_POLL)
        task = worker.state.tasks.get(key)
        if task is None or task.state not in _RUNNING:
            work.cancel()
            return
