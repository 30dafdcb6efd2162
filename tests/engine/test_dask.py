"""`orch run --executor dask`: agent calls on a real Dask cluster of worker processes.

One cluster per module, started with Dask's own commands as the README shows
(`dask scheduler`, then `dask worker`): a plain worker and one that offers the
resource GPU=1. Runs go through the real `orch` command in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_workflows import EXPECTED, ours

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).parent / "dask")


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [DASK, *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # the nanny and its worker are stopped as one group
            cwd=log.parent,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Cluster:
    """A scheduler and its workers, each a `dask` command in its own process group."""

    def __init__(self, folder: Path, workers: dict[str, list[str]]) -> None:
        self.folder = folder
        info = folder / "scheduler.json"
        self.procs = [
            _start(
                [
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(info),
                ],
                folder / "scheduler.log",
            )
        ]
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert time.monotonic() < deadline, (folder / "scheduler.log").read_text()
            time.sleep(0.1)
        self.address = json.loads(info.read_text())["address"]
        for name, extra in workers.items():
            self.procs.append(
                _start(
                    [
                        "worker",
                        self.address,
                        "--name",
                        name,
                        "--nthreads",
                        "2",
                        "--no-dashboard",
                        *extra,
                    ],
                    folder / f"worker-{name}.log",
                )
            )
        self.names = list(workers)
        self.workers()  # waits for all of them

    def workers(self) -> dict[str, str]:
        """{worker name: address}, once every worker is up (after a restart too)."""
        with distributed.Client(self.address, timeout=30) as client:
            client.wait_for_workers(len(self.names), timeout=60)
            info = client.scheduler_info(n_workers=-1)["workers"]
        return {w["name"]: address for address, w in info.items()}

    @property
    def url(self) -> str:
        return "dask://" + self.address.removeprefix("tcp://")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    found = Cluster(tmp_path_factory.mktemp("dask"), {"plain": [], "gpu": ["--resources", "GPU=1"]})
    yield found
    found.stop()


def orch(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "ORCH_STATE_DIR": str(tmp_path / ".orch"), **(env or {})},
    )


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def completed(events: list[dict], phase: str) -> dict:
    return next(e for e in events if e["event"] == "phase_completed" and e.get("phase") == phase)


@pytest.mark.slow
@pytest.mark.parametrize("workflow", ours(), ids=lambda p: p.stem)
def test_the_seed_workflows_give_the_same_outputs_on_dask_as_locally(workflow, cluster, tmp_path):
    _, code, expected = EXPECTED[workflow.stem]
    outputs = {}
    for where in ("local", cluster.url):
        out = tmp_path / f"{where.split(':')[0]}.json"
        done = orch(tmp_path, "run", str(workflow), "--executor", where, "--output-file", str(out))
        assert done.returncode == code, done.stderr
        outputs[where] = json.loads(out.read_text())
    assert outputs[cluster.url] == outputs["local"]
    assert expected.items() <= outputs["local"].items()


def test_every_call_of_a_dask_run_ran_on_a_worker_of_the_cluster(cluster, tmp_path):
    wf = write(
        tmp_path,
        "name: where\nphases:\n"
        + "".join(f"  - id: p{i}\n    agent: echo\n    with: {{text: '{i}'}}\n" for i in range(6)),
    )
    done = orch(tmp_path, "run", str(wf), "--executor", cluster.url, "--events", "jsonl")
    assert done.returncode == 0, done.stderr
    ran_on = {
        completed(events_of(done.stdout), f"p{i}")["data"]["metadata"]["worker"] for i in range(6)
    }
    assert ran_on <= set(cluster.workers().values())
    assert f"agent calls run on the Dask cluster at {cluster.address}: 2 workers" in done.stderr


def test_dask_scheduler_address_in_the_environment_picks_the_cluster(cluster, tmp_path):
    wf = write(tmp_path, "name: env\nphases:\n  - id: a\n    agent: echo\n    with: {text: hi}\n")
    done = orch(
        tmp_path,
        "run",
        str(wf),
        "--executor",
        "dask",
        "--events",
        "jsonl",
        env={"DASK_SCHEDULER_ADDRESS": cluster.address},
    )
    assert done.returncode == 0, done.stderr
    worker = completed(events_of(done.stdout), "a")["data"]["metadata"]["worker"]
    assert worker in cluster.workers().values()


def test_a_phase_with_resources_runs_only_on_the_worker_that_offers_them(cluster, tmp_path):
    wf = write(
        tmp_path,
        "name: gpu\nphases:\n"
        + "".join(
            f"  - id: train{i}\n    agent: echo\n    with: {{text: '{i}'}}\n"
            "    resources: {GPU: 1}\n"
            for i in range(4)
        ),
    )
    assert orch(tmp_path, "validate", str(wf)).returncode == 0
    done = orch(tmp_path, "run", str(wf), "--executor", cluster.url, "--events", "jsonl")
    assert done.returncode == 0, done.stderr
    gpu = cluster.workers()["gpu"]
    events = events_of(done.stdout)
    assert {completed(events, f"train{i}")["data"]["metadata"]["worker"] for i in range(4)} == {gpu}


def test_a_phase_asking_for_a_resource_no_worker_offers_fails_after_the_wait(cluster, tmp_path):
    wf = write(
        tmp_path,
        "name: tpu\nphases:\n  - id: big\n    agent: echo\n    with: {text: x}\n"
        "    resources: {TPU: 2}\n",
    )
    done = orch(
        tmp_path,
        "run",
        str(wf),
        "--executor",
        cluster.url,
        "--events",
        "jsonl",
        env={"ORCH_DASK_RESOURCE_WAIT": "0.5"},
    )
    assert done.returncode == 1
    failed = next(e for e in events_of(done.stdout) if e["event"] == "phase_failed")
    assert failed["data"]["error"].startswith(
        "no Dask worker offers the resources TPU=2 (waited 0.5s; workers offer: GPU=1)"
    )
    assert '--resources "TPU=2"' in failed["data"]["error"]


def _follow(proc: subprocess.Popen[str], until) -> list[dict]:
    """Read events from a running `orch run --events jsonl` until ``until(event)``."""
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            seen.append(json.loads(line))
            if until(seen[-1]):
                return seen
    raise AssertionError(
        f"the run ended first: {seen}\n{proc.stderr.read() if proc.stderr else ''}"
    )


def _popen(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, session: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ORCH_STATE_DIR": str(tmp_path / ".orch"), **(env or {})},
        start_new_session=session,
    )


def test_a_streamed_shell_phase_shows_its_lines_as_events_while_it_runs(cluster, tmp_path):
    # the command waits for a file the test writes only after it saw the first line:
    # the line can only have come while the command ran
    gate = tmp_path / "gate"
    wf = write(
        tmp_path,
        "name: stream\nphases:\n  - id: talk\n    agent: shell\n    timeout: 60s\n    with:\n"
        f'      command: "echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second"\n'
        "      stream: true\n",
    )
    proc = _popen(tmp_path, "run", str(wf), "--executor", cluster.url, "--events", "jsonl")
    seen = _follow(proc, lambda e: e["event"] == "phase_stream")
    assert seen[-1]["data"] == {"text": "first\n"}
    assert not any(e["event"] == "phase_completed" for e in seen)
    gate.touch()
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    events = seen + events_of(rest)
    texts = [e["data"]["text"] for e in events if e["event"] == "phase_stream"]
    assert texts == ["first\n", "second\n"]
    kinds = [e["event"] for e in events]
    assert kinds.index("phase_stream") < kinds.index("phase_completed")
    assert completed(events, "talk")["data"]["output"] == "first\nsecond"


def test_secrets_streamed_from_a_worker_are_masked_in_every_event(cluster, tmp_path):
    wf = write(
        tmp_path,
        "name: secret\nphases:\n  - id: leak\n    agent: shell\n    with:\n"
        '      command: "echo token={{ secrets.TOKEN }}"\n      stream: true\n',
    )
    done = orch(
        tmp_path,
        "run",
        str(wf),
        "--executor",
        cluster.url,
        "--events",
        "jsonl",
        env={"TOKEN": "s3cr3t-value-42"},
    )
    assert done.returncode == 0, done.stderr
    assert "s3cr3t-value-42" not in done.stdout + done.stderr
    texts = [e["data"]["text"] for e in events_of(done.stdout) if e["event"] == "phase_stream"]
    assert texts == ["token=***\n"]


def test_a_worker_killed_during_a_phase_fails_that_attempt_and_a_retry_completes(cluster, tmp_path):
    # the first attempt prints its worker's pid ($PPID of the shell) and waits; the test
    # kills that worker process with SIGKILL; the retry runs on a live worker
    marker = tmp_path / "first-attempt"
    wf = write(
        tmp_path,
        "name: crash\nphases:\n  - id: work\n    agent: shell\n    timeout: 60s\n"
        "    retries: {attempts: 2, backoff: fixed, delay: 100ms}\n    with:\n"
        f'      command: "if [ -e {marker} ]; then echo done; else touch {marker};'
        ' echo pid $PPID $$; sleep 30; fi"\n'
        "      stream: true\n",
    )
    before = cluster.workers()
    proc = _popen(tmp_path, "run", str(wf), "--executor", cluster.url, "--events", "jsonl")
    seen = _follow(proc, lambda e: e["event"] == "phase_stream")
    _, worker_pid, shell_pid = seen[-1]["data"]["text"].split()
    os.kill(int(worker_pid), signal.SIGKILL)
    try:
        rest, err = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(int(shell_pid), signal.SIGKILL)  # the orphaned sleep of the dead worker
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err
    events = seen + events_of(rest)
    retry = next(e for e in events if e["event"] == "phase_retry")
    assert retry["attempt"] == 1
    assert retry["data"]["error"].startswith("the Dask worker tcp://")
    assert retry["data"]["error"].endswith("died during the call")
    done = completed(events, "work")
    assert done["attempt"] == 2 and done["data"]["output"] == "done"
    died = retry["data"]["error"].split()[3]
    assert died in before.values()
    assert done["data"]["metadata"]["worker"] != died
    cluster.workers()  # the nanny brought the killed worker back for the next tests


def test_a_phase_timeout_ends_the_command_and_its_children_on_the_worker(cluster, tmp_path):
    pids = tmp_path / "pids"
    wf = write(
        tmp_path,
        "name: slow\nphases:\n  - id: slow\n    agent: shell\n    timeout: 1s\n    with:\n"
        f'      command: "sleep 300 & echo $! $$ > {pids}; wait"\n'
        "      kill_grace: 0.2\n",
    )
    done = orch(tmp_path, "run", str(wf), "--executor", cluster.url, "--events", "jsonl")
    assert done.returncode == 1
    failed = next(e for e in events_of(done.stdout) if e["event"] == "phase_failed")
    assert failed["data"]["error"] == "timed out after 1s"
    child, shell = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 30
    while _alive(child) or _alive(shell):
        assert time.monotonic() < deadline, "the command still runs on the worker"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_max_parallel_still_bounds_the_calls_running_at_once(cluster, tmp_path):
    wf = write(
        tmp_path,
        "name: bounded\nmax_parallel: 1\nphases:\n"
        + "".join(
            f"  - id: s{i}\n    agent: sleep\n    with: {{seconds: 0.2}}\n" for i in range(3)
        ),
    )
    done = orch(tmp_path, "run", str(wf), "--executor", cluster.url, "--events", "jsonl")
    assert done.returncode == 0, done.stderr
    running = 0
    for event in events_of(done.stdout):
        if event["event"] == "phase_started":
            running += 1
            assert running == 1
        elif event["event"] == "phase_completed":
            running -= 1


def test_an_agent_type_installed_only_where_orch_runs_fails_naming_the_worker(cluster, tmp_path):
    # a plugin on orch's path (found through its entry point) but not on the workers'
    site = tmp_path / "site"
    (site / "shout_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "shout_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n"
    )
    (site / "shout_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[orchestrator.agents]\nshout = shout_plugin:Shout\n"
    )
    (site / "shout_plugin.py").write_text(
        "from orchestrator.agents import Agent\n"
        "class Shout(Agent):\n    name = 'shout'\n"
        "    async def run(self, input, ctx):\n        return 'HI'\n"
    )
    wf = write(tmp_path, "name: plug\nphases:\n  - id: loud\n    agent: shout\n")
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    local = orch(tmp_path, "run", str(wf), env={"PYTHONPATH": path})
    assert local.returncode == 0, local.stderr
    done = orch(
        tmp_path,
        "run",
        str(wf),
        "--executor",
        cluster.url,
        "--events",
        "jsonl",
        env={"PYTHONPATH": path},
    )
    assert done.returncode == 1
    failed = next(e for e in events_of(done.stdout) if e["event"] == "phase_failed")
    workers = cluster.workers().values()
    assert any(
        failed["data"]["error"]
        == f"agent type 'shout' (shout_plugin:Shout) cannot be used on the Dask worker {w}: "
        "ModuleNotFoundError: No module named 'shout_plugin'; "
        "install shout-plugin where that worker runs (as here)"
        for w in workers
    ), failed["data"]["error"]
    assert failed["data"]["attempts"] == 1  # not retried: it will not heal by itself


def test_the_python_api_runs_calls_on_the_cluster_through_an_executor_option(cluster, tmp_path):
    import asyncio

    from orchestrator import compile_plan, load_workflow
    from orchestrator.engine import RunOptions, execute
    from orchestrator.engine.dask_executor import opened, parse_executor

    wf = write(tmp_path, "name: api\nphases:\n  - id: a\n    agent: echo\n    with: {text: api}\n")
    plan = compile_plan(load_workflow(str(wf)))

    async def main():
        async with opened(parse_executor(cluster.url)) as calls:
            return await execute(plan, options=RunOptions(executor=calls))

    result = asyncio.run(main())
    assert result.status == "completed"
    assert result.phases["a"].output == "api"
    assert result.phases["a"].metadata["worker"] in cluster.workers().values()


def test_a_local_cluster_is_started_for_the_run_with_the_workers_asked_for(tmp_path):
    demo = ROOT / "workflows" / "demo.yaml"
    out = tmp_path / "dask.json"
    done = orch(
        tmp_path,
        "run",
        str(demo),
        "--executor",
        "dask",
        "--output-file",
        str(out),
        env={"ORCH_DASK_WORKERS": "2", "ORCH_DASK_THREADS": "2", "DASK_SCHEDULER_ADDRESS": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "agent calls run on a local Dask cluster at tcp://127.0.0.1:" in done.stderr
    assert ": 2 workers, 4 threads" in done.stderr
    local = tmp_path / "local.json"
    assert orch(tmp_path, "run", str(demo), "--output-file", str(local)).returncode == 0
    assert json.loads(out.read_text()) == json.loads(local.read_text())


def test_lost_scheduler_fails_the_running_phase_clearly_and_the_run_can_be_resumed(
    cluster, tmp_path
):
    (tmp_path / "own").mkdir()
    own = Cluster(tmp_path / "own", {"only": []})
    gate = tmp_path / "gate"
    wf = write(
        tmp_path,
        "name: lost\nphases:\n  - id: long\n    agent: shell\n    with:\n"
        f'      command: "echo begun; while [ ! -e {gate} ]; do sleep 0.05; done; echo ok"\n'
        "      stream: true\n",
    )
    try:
        proc = _popen(tmp_path, "run", str(wf), "--executor", own.url, "--events", "jsonl")
        seen = _follow(proc, lambda e: e["event"] == "phase_stream")
        _stop(own.procs[0])  # the scheduler goes away during the phase
        rest, err = proc.communicate(timeout=90)
    finally:
        own.stop()
        gate.touch()
    assert proc.returncode == 1, err
    events = seen + events_of(rest)
    failed = next(e for e in events if e["event"] == "phase_failed")
    run_id = events[0]["run_id"]
    assert failed["data"]["error"] == (
        f"lost the connection to the Dask scheduler at {own.address}; "
        f"the run can be resumed (orch resume {run_id} --executor {own.address}) "
        "once the cluster is back"
    )
    resumed = orch(tmp_path, "resume", run_id, "--executor", cluster.url)  # on another cluster
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run {run_id}: 0 of 1 phase completed, 1 to run" in resumed.stderr
    assert f"agent calls run on the Dask cluster at {cluster.address}" in resumed.stderr


def test_without_dask_installed_the_dask_executor_says_how_to_install_it(tmp_path):
    wf = write(tmp_path, "name: x\nphases:\n  - id: a\n    agent: noop\n")
    code = (
        "import sys\nsys.modules['distributed'] = None\n"
        "from orchestrator.cli import main\n"
        f"sys.argv = ['orch', 'run', {str(wf)!r}, '--executor', 'dask']\nmain()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: --executor dask needs Dask, which is not installed (distributed is missing)\n"
        "  hint: install the extra: pip install 'orch-workflows[dask]'\n"
    )


def test_an_unknown_executor_is_a_usage_error(tmp_path):
    wf = write(tmp_path, "name: x\nphases:\n  - id: a\n    agent: noop\n")
    done = orch(tmp_path, "run", str(wf), "--executor", "spark")
    assert done.returncode == 2
    assert done.stderr == (
        "error: unknown executor 'spark'\n"
        "  hint: use --executor local (the default), dask, or dask://HOST:PORT\n"
    )


def test_neither_help_nor_a_local_run_imports_dask(tmp_path):
    wf = write(tmp_path, "name: x\nphases:\n  - id: a\n    agent: echo\n    with: {text: hi}\n")
    for argv in (["orch", "--help"], ["orch", "run", str(wf)]):
        code = (
            "import sys, json\nfrom orchestrator.cli import main\n"
            f"sys.argv = {argv!r}\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "ORCH_STATE_DIR": str(tmp_path / ".orch")},
        )
        loaded = json.loads(done.stderr[done.stderr.index('["') :])
        assert [m for m in loaded if m.split(".")[0] in ("dask", "distributed")] == []


def test_a_workflow_phase_runs_its_sub_run_from_the_orch_process_on_dask(cluster, tmp_path):
    write(
        tmp_path,
        "name: child\ninputs:\n  who: {type: string}\nphases:\n"
        "  - id: hello\n    agent: echo\n    with: {text: 'hello {{ inputs.who }}'}\n"
        "outputs:\n  greeting: '{{ phases.hello.output }}'\n",
        name="child.yaml",
    )
    wf = write(
        tmp_path,
        "name: parent\nphases:\n  - id: sub\n    agent: workflow\n"
        "    with: {path: child.yaml, inputs: {who: dask}}\n"
        "outputs:\n  greeting: '{{ phases.sub.output.greeting }}'\n",
    )
    done = orch(tmp_path, "run", str(wf), "--executor", cluster.url, "--events", "jsonl")
    assert done.returncode == 0, done.stderr
    sub = completed(events_of(done.stdout), "sub")["data"]
    assert sub["output"] == {"greeting": "hello dask"}
    assert "worker" not in sub["metadata"]  # the sub-run itself ran in the orch process


def test_ctrl_c_cancels_a_run_on_its_local_cluster_without_losing_workers(tmp_path):
    # a terminal's Ctrl-C signals the whole process group: orch and its cluster's workers
    wf = write(
        tmp_path,
        "name: stop\nphases:\n  - id: wait\n    agent: shell\n"
        "    retries: {attempts: 2, delay: 100ms}\n    with:\n"
        '      command: "echo begun; sleep 60"\n      stream: true\n',
    )
    proc = _popen(
        tmp_path,
        "run",
        str(wf),
        "--executor",
        "dask",
        "--events",
        "jsonl",
        env={"ORCH_DASK_WORKERS": "1", "DASK_SCHEDULER_ADDRESS": ""},
        session=True,
    )
    seen = _follow(proc, lambda e: e["event"] == "phase_stream")
    os.killpg(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    events = seen + events_of(rest)
    assert not any(e["event"] == "phase_retry" for e in events)
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert (failed["data"]["status"], failed["data"]["error"]) == ("cancelled", "cancelled")
    assert events[-1]["event"] == "workflow_cancelled"


# A program using the Python API with agent types of its own: one defined in the program
# (its __main__), one in a module next to it, both registered on the registry given to
# the run. WHERE is the --executor value; the script prints each phase's outcome.
_OWN_TYPES = """\
import asyncio, json, sys

import orchestrator
from orchestrator import Agent, AgentRegistry
from orchestrator.engine.dask_executor import opened, parse_executor

from nearby import Nearby


class Shout(Agent):
    name = "shout"

    async def run(self, input, ctx):
        return str(input["text"]).upper() + "!"


async def main(where):
    registry = AgentRegistry.from_entry_points()
    registry.register(Shout)
    registry.register(Nearby)
    async with opened(parse_executor(where)) as calls:
        handle = await orchestrator.start("wf.yaml", registry=registry, executor=calls)
        result = await handle.wait()
    print(json.dumps({
        pid: {"status": p.status, "output": p.output, "error": p.error,
              "worker": p.metadata.get("worker")}
        for pid, p in result.phases.items()
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
"""


def _own_types(tmp_path: Path, where: str, env: dict[str, str] | None = None) -> dict:
    (tmp_path / "nearby.py").write_text(
        "from orchestrator import Agent\n"
        "class Nearby(Agent):\n    name = 'nearby'\n"
        "    async def run(self, input, ctx):\n        return {'near': input['n'] * 2}\n"
    )
    (tmp_path / "program.py").write_text(_OWN_TYPES)
    write(
        tmp_path,
        "name: own\nphases:\n"
        "  - id: loud\n    agent: shout\n    with: {text: hello}\n"
        # after loud: where near fails, fail-fast must not cancel loud first (a race)
        "  - id: near\n    agent: nearby\n    depends_on: [loud]\n    with: {n: 21}\n",
    )
    done = subprocess.run(
        [sys.executable, "program.py", where],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "ORCH_STATE_DIR": str(tmp_path / ".orch"), **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_agent_types_registered_through_the_python_api_run_on_a_local_cluster(tmp_path):
    phases = _own_types(tmp_path, "dask", {"ORCH_DASK_WORKERS": "2", "DASK_SCHEDULER_ADDRESS": ""})
    assert (phases["loud"]["status"], phases["loud"]["output"]) == ("completed", "HELLO!")
    assert (phases["near"]["status"], phases["near"]["output"]) == ("completed", {"near": 42})
    for phase in phases.values():  # each ran on a worker process of the local cluster
        assert phase["worker"].startswith("tcp://127.0.0.1:")


def test_a_registered_agent_type_a_worker_cannot_import_fails_naming_worker_and_module(
    cluster, tmp_path
):
    # the cluster's workers run elsewhere: nearby.py (next to the program) is not on their path
    phases = _own_types(tmp_path, cluster.url)
    assert (phases["loud"]["status"], phases["loud"]["output"]) == ("completed", "HELLO!")
    near = phases["near"]
    assert near["status"] == "failed"
    assert any(
        near["error"]
        == f"agent type 'nearby' (nearby:Nearby) cannot be used on the Dask worker {w}: "
        "ModuleNotFoundError: No module named 'nearby'; make the module 'nearby' importable "
        "where that worker runs (install the package that provides it, or put its folder "
        "on the worker's PYTHONPATH)"
        for w in cluster.workers().values()
    ), near["error"]


_SERVED = """name: served
triggers:
  - webhook: true
phases:
  - {id: hello, agent: echo, with: {text: "hi {{ inputs.who }}"}}
  - id: loud
    agent: shell
    depends_on: [hello]
    with: {command: "echo {{ phases.hello.output | upper }}"}
inputs:
  who: {type: string, required: true}
"""


def _serve_two_runs(srv) -> list[dict]:
    ids = [
        srv.http.post("/api/workflows/served/runs", json={"inputs": {"who": who}}).json()["id"]
        for who in ("ada", "bob")
    ]
    return [srv.run_when(run_id, "completed", "failed", timeout=120) for run_id in ids]


def test_orch_serve_runs_the_calls_of_its_runs_on_a_dask_cluster(cluster, tmp_path):
    from tests.service.serving import Serve

    with Serve(tmp_path, {"served": _SERVED}, args=("--executor", cluster.url)) as srv:
        runs = _serve_two_runs(srv)
        log = srv.log()
    assert f"agent calls run on the Dask cluster at {cluster.address}: 2 workers" in log
    workers = set(cluster.workers().values())
    for run, who in zip(runs, ("ADA", "BOB"), strict=True):
        assert run["status"] == "completed", run
        assert [p["output"] for p in run["phases"]] == [f"hi {who.lower()}", f"HI {who}"]
        assert {p["metadata"]["worker"] for p in run["phases"]} <= workers


def test_orch_serve_keeps_one_local_cluster_for_all_its_runs(tmp_path):
    from tests.service.serving import Serve

    env = {"ORCH_DASK_WORKERS": "1", "DASK_SCHEDULER_ADDRESS": ""}
    with Serve(tmp_path, {"served": _SERVED}, args=("--executor", "dask"), env=env) as srv:
        runs = _serve_two_runs(srv)
        log = srv.log()
    assert "agent calls run on a local Dask cluster at tcp://127.0.0.1:" in log
    workers = {p["metadata"]["worker"] for run in runs for p in run["phases"]}
    assert [run["status"] for run in runs] == ["completed", "completed"]
    assert len(workers) == 1  # the one worker of the service's cluster served both runs
    assert next(iter(workers)).startswith("tcp://127.0.0.1:")


def test_orch_serve_with_an_unreachable_scheduler_says_so_and_exits_2(tmp_path):
    (tmp_path / "workflows").mkdir()
    done = orch(tmp_path, "serve", "--port", "0", "--executor", "dask://127.0.0.1:9")
    assert done.returncode == 2
    # nothing listens there: told at once (Dask's Client retries a refused connection
    # until its timeout, and its message then is "Timed out trying to connect")
    refused = "cannot reach the Dask scheduler at tcp://127.0.0.1:9: connection refused"
    assert f"\nerror: {refused} (nothing listens on that port)\n" in done.stderr
    assert "listening on" not in done.stderr
    assert "hint: start one with `dask scheduler`" in done.stderr
    bad = orch(tmp_path, "serve", "--port", "0", "--executor", "spark")
    assert bad.returncode == 2
    assert "error: unknown executor 'spark'" in bad.stderr


def test_a_host_whose_every_address_refuses_is_connection_refused(monkeypatch):
    # `localhost` may be ::1 and 127.0.0.1: asyncio's own connect raised a bare
    # OSError('Multiple exceptions: ...') when both refused. No name on this machine is
    # sure to have two addresses, so only the name's resolution is stood in for: the
    # connections are real (port 9 of 127.0.0.1 and 127.0.0.2: nothing listens there).
    import asyncio
    import socket

    from orchestrator.engine.dask_executor import _probe

    listener = socket.create_server(("127.0.0.1", 0))
    open_port = listener.getsockname()[1]

    async def two_addresses(self, host, port, **kwargs):
        assert host == "twohomes"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", two_addresses)
    with pytest.raises(OSError) as refused:
        asyncio.run(_probe("tcp://twohomes:9", 10))
    assert str(refused.value) == "connection refused (nothing listens on that port)"
    with listener:  # one address refuses, the next accepts: reached
        asyncio.run(_probe(f"tcp://twohomes:{open_port}", 10))
        conn, _ = listener.accept()
        conn.close()


def test_orch_run_with_a_wrong_scheduler_address_says_so_exits_2_and_runs_nothing(tmp_path):
    wf = write(tmp_path, "name: w\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n")
    done = orch(tmp_path, "run", str(wf), "--executor", "dask://127.0.0.1:9")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "error: cannot reach the Dask scheduler at tcp://127.0.0.1:9: connection refused"
    )
    assert "Traceback" not in done.stderr
    assert "hint: start one with `dask scheduler`" in done.stderr
    assert "no runs recorded yet" in orch(tmp_path, "runs").stdout  # nothing ran
    # tls:// without Dask's TLS settings: said so (Dask's Client raised a TypeError)
    tls = orch(tmp_path, "run", str(wf), "--executor", "tls://127.0.0.1:9")
    assert tls.returncode == 2, tls.stderr
    assert tls.stderr.startswith(
        "error: cannot connect to the Dask scheduler at tls://127.0.0.1:9: tls:// needs "
        "Dask's TLS settings, and none are set"
    )
    assert "hint: set distributed.comm.tls.ca-file" in tls.stderr
    assert "Traceback" not in tls.stderr


# A program whose agent type holds something to release: each instance notes, in the
# folder given, the process it was made in (made-PID-N) and, when closed, that it was
# (closed-PID-N). --keep leaves without closing the executor (as a killed process). The
# program's own instances (the run checks and closes its agents) are left out.
_HOLDER = """\
import asyncio, os, sys
from pathlib import Path

import orchestrator
from orchestrator import Agent, AgentRegistry
from orchestrator.engine.dask_executor import open_executor, parse_executor

MARKS = Path(sys.argv[2])


class Holder(Agent):
    name = "holder"

    def __init__(self, name):
        super().__init__(name)
        self.mark = f"{os.getpid()}-{id(self)}"
        (MARKS / f"made-{self.mark}").write_text("")

    async def run(self, input, ctx):
        await asyncio.sleep(0.05)
        return os.getpid()

    async def aclose(self):
        (MARKS / f"closed-{self.mark}").write_text("")


async def main(where, keep):
    registry = AgentRegistry.from_entry_points()
    registry.register(Holder)
    calls = await open_executor(parse_executor(where))
    handle = await orchestrator.start("wf.yaml", registry=registry, executor=calls)
    result = await handle.wait()
    print(result.status, os.getpid(), flush=True)
    if keep:
        os._exit(0)
    await calls.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--keep" in sys.argv))
"""

_HELD = """\
name: held
phases:
  - id: each
    agent: holder
    foreach: "{{ range(8) | list }}"
    max_parallel: 8
"""


def _holders(tmp_path: Path, where: str, *extra: str, env: dict[str, str] | None = None):
    """Run the program; the worker agents made and those closed (their marks)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "program.py").write_text(_HOLDER)
    write(tmp_path, _HELD)
    done = subprocess.run(
        [sys.executable, "program.py", where, str(marks), *extra],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "ORCH_STATE_DIR": str(tmp_path / ".orch"), **(env or {})},
    )
    status, pid = done.stdout.split()
    assert done.returncode == 0 and status == "completed", done.stderr

    def marked(kind: str) -> set[str]:
        """The marks of the instances made on the workers (not in the program's process)."""
        names = {p.name.removeprefix(kind) for p in marks.glob(f"{kind}*")}
        return {name for name in names if not name.startswith(f"{pid}-")}

    return marked


def test_the_agents_made_on_a_local_clusters_workers_are_closed_when_the_run_ends(tmp_path):
    env = {"ORCH_DASK_WORKERS": "2", "DASK_SCHEDULER_ADDRESS": ""}
    marked = _holders(tmp_path, "dask", env=env)
    made = marked("made-")
    assert made and marked("closed-") == made


def test_the_agents_an_orch_process_made_on_a_cluster_are_closed_and_the_cluster_lives_on(
    cluster, tmp_path
):
    before = cluster.workers()
    marked = _holders(tmp_path, cluster.url)
    made = marked("made-")
    assert made and marked("closed-") == made  # closed by the run's end, workers still up
    assert cluster.workers() == before


def test_a_workers_agents_are_closed_when_it_shuts_down_after_the_orch_process_is_gone(
    tmp_path,
):
    (tmp_path / "cluster").mkdir()
    own = Cluster(tmp_path / "cluster", {"only": []})
    try:
        marked = _holders(tmp_path, own.url, "--keep")  # left without closing anything
        made = marked("made-")
        assert made and not marked("closed-")
        worker = own.procs[1]  # `dask worker`: SIGTERM to it (the nanny) closes its worker
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=60) is not None
    finally:
        own.stop()
    assert marked("closed-") == made  # the worker closed what it held as it shut down
