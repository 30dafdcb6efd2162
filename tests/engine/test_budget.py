"""Cost and budgets through the real `orch run`: llm calls against the fake OpenAI server.

Each call's cost comes from its token usage and the price (`price:` in `with:`,
or the built-in table); `budget: {tokens, cost}` refuses the first call made
after what is already spent reaches it, so a loop of paid calls stops at the
right call, running phases are cancelled and compensations still run.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.servers import FakeOpenAI, Reply

LOOP = """\
name: paid-loop
agents:
  model:
    type: llm
    with:
      model: "{model}"
      stream: false
      {price}
{budget}
phases:
  - id: book
    agent: echo
    with: {{text: booked}}
    compensate: {{agent: echo, with: {{text: "unbook"}}}}
  - id: loop
    depends_on: [book]
    foreach: "{{{{ range(10) | list }}}}"
    max_parallel: 1
    agent: model
    with: {{prompt: "item {{{{ item }}}}"}}
  - id: slow
    depends_on: [book]
    agent: sleep
    with: {{seconds: {slow}}}
finally:
  - id: report
    agent: echo
    with: {{text: done}}
"""


def _status(run_id: str) -> dict[str, Any]:
    """``orch status RUN --json`` (the store of the current folder), as a user reads it."""
    return json.loads(CliRunner().invoke(app, ["status", run_id, "--json"]).stdout)


def _stats() -> dict[str, Any]:
    """``orch stats --json`` (the store of the current folder)."""
    return json.loads(CliRunner().invoke(app, ["stats", "--json"]).stdout)


def run(tmp_path, srv, *, budget="", price="", model="my-model", slow=30):
    text = LOOP.format(budget=budget, price=price, model=model, slow=slow)
    return run_text(tmp_path / "loop.yaml", text, srv)


def run_text(path, text, srv):
    """`orch run` of ``text`` written at ``path``, against the fake server: (result, events)."""
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["run", str(path), "--events", "jsonl"],
        env={"OPENAI_BASE_URL": srv.base_url},
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, events


def test_a_token_budget_stops_a_loop_of_llm_calls_at_the_right_call(tmp_path):
    # each call: prompt "item N" = 2 tokens, answer "ok then" = 2 tokens: 4 tokens a call
    with FakeOpenAI(["ok then"]) as srv:
        result, events = run(tmp_path, srv, budget="budget: {tokens: 10}")
        calls = len(srv.requests)
    assert result.exit_code == 1, result.output
    assert calls == 3  # 4 + 4 = 8 < 10 lets the third call go; 12 >= 10 refuses the fourth
    failed = next(e for e in events if e["event"] == "phase_failed" and e["phase"] == "loop")
    assert failed["data"]["error"].startswith(
        "7 of 10 items failed; item 4 of 10 (index 3): the run's budget is used up: "
        "12 of 10 tokens spent (budget.tokens) (used by loop 12 tokens); no more agent calls"
    )
    # the run stopped cleanly: the other running phase was cancelled, the saga and the
    # finally handler ran, and the message names the budget
    slow = next(e for e in events if e.get("phase") == "slow" and e["event"] == "phase_failed")
    assert slow["data"]["status"] == "cancelled"
    assert any(e["event"] == "phase_compensated" and e["phase"] == "book" for e in events)
    assert any(e["event"] == "phase_completed" and e["phase"] == "report" for e in events)
    end = events[-1]
    assert end["event"] == "workflow_failed"
    assert "phase 'loop' failed: 7 of 10 items failed" in end["data"]["error"]
    assert "budget.tokens" in result.stderr


def test_a_cost_budget_with_prices_in_with_and_the_cost_in_events_and_summary(tmp_path):
    # 2 prompt tokens at $1,000/1M + 2 completion tokens at $2,000/1M = $0.006 a call
    price = "price: {input_per_1m: 1000, output_per_1m: 2000}"
    with FakeOpenAI(["ok then"]) as srv:
        result, events = run(tmp_path, srv, budget="budget: {cost: 0.02}", price=price)
        calls = len(srv.requests)
    assert calls == 4  # $0.018 < $0.02 after three calls; $0.024 after four refuses the fifth
    failed = next(e for e in events if e["event"] == "phase_failed" and e["phase"] == "loop")
    assert (
        "$0.0240 of $0.0200 spent (budget.cost) (used by loop 16 tokens $0.0240)"
        in (failed["data"]["error"])
    )
    assert result.exit_code == 1


def test_cost_per_phase_and_run_from_the_built_in_prices(tmp_path):
    # gpt-4o-mini: $0.15 / $0.60 per 1M tokens; 10 calls of 2 + 2 tokens
    with FakeOpenAI(["ok then"]) as srv:
        result, events = run(tmp_path, srv, model="gpt-4o-mini-2024-07-18", slow=0.01)
    assert result.exit_code == 0, result.output
    loop = next(e for e in events if e["event"] == "phase_completed" and e["phase"] == "loop")
    per_call = (2 * 0.15 + 2 * 0.60) / 1e6
    assert loop["data"]["metadata"]["cost"] == pytest.approx(10 * per_call)
    assert loop["data"]["metadata"]["tokens"] == {"prompt": 20, "completion": 20, "total": 40}
    end = events[-1]
    assert end["data"]["cost"] == pytest.approx(10 * per_call)
    assert "cost: $0.000015" in result.stderr  # the summary
    info = _status(end["run_id"])
    assert info["cost"] == pytest.approx(10 * per_call)
    assert {p["id"]: p["cost"] for p in info["phases"]}["loop"] == pytest.approx(10 * per_call)
    stats = _stats()
    assert stats["workflows"][0]["cost"] == pytest.approx(10 * per_call)
    assert {a["agent"]: a["cost"] for a in stats["agents"]}["model"] == pytest.approx(10 * per_call)


def test_a_resumed_run_counts_what_its_completed_phases_spent(tmp_path):

    path = tmp_path / "paid.yaml"
    path.write_text(_research_then("write", budget="budget: {tokens: 3}\n"), encoding="utf-8")
    with FakeOpenAI(answer=lambda request: "some words back") as srv:
        env = _env(tmp_path, srv)
        orch = functools.partial(_orch, tmp_path, env)

        first = orch("run", str(path))
        assert first.returncode == 1
        assert "the run's budget is used up" in first.stderr
        assert len(srv.requests) == 1  # research spent the budget; write was refused
        run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
        resumed = orch("resume", run_id)
        # research's tokens still count: write is refused again, no paid call is made
        assert resumed.returncode == 1, resumed.stderr
        assert "the run's budget is used up" in resumed.stderr
        assert "used by research" in resumed.stderr
        assert len(srv.requests) == 1


def test_a_resumed_phase_counts_what_its_failed_launch_spent(tmp_path):
    import os

    # item 0 spends 100 tokens, item 1 fails (no usage) while the file `broken` exists
    (tmp_path / "spend_mod.py").write_text(
        "from pathlib import Path\n"
        "from orchestrator.agents.base import AgentResult\n\n"
        "def work(i):\n"
        "    if i == 1 and Path('broken').exists():\n"
        "        raise ValueError('item 1 is broken')\n"
        "    return AgentResult(output=i, metadata={'tokens': {'total': 100}})\n"
    )
    (tmp_path / "broken").touch()
    path = tmp_path / "spend.yaml"
    path.write_text(
        "name: spend\nphases:\n  - id: each\n    agent: python\n    foreach: [0, 1]\n"
        "    with: {function: 'spend_mod:work', kwargs: {i: '{{ item }}'}}\n"
    )
    env = {**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch")}

    orch = functools.partial(_orch, tmp_path, env)

    first = orch("run", str(path))
    assert first.returncode == 1, first.stderr
    run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
    assert json.loads(orch("status", run_id, "--json").stdout)["tokens"]["total"] == 100
    (tmp_path / "broken").unlink()
    resumed = orch("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "foreach goes on: each (1 item done)" in resumed.stderr
    # item 0's 100 tokens (the failed launch) and item 1's 100 (this one)
    status = json.loads(orch("status", run_id, "--json").stdout)
    assert status["tokens"]["total"] == 200
    assert status["phases"][0]["tokens"] == {"total": 200}
    stats = json.loads(orch("stats", "--json").stdout)
    assert stats["workflows"][0]["tokens"] == 200
    assert stats["phases"][0]["tokens"] == 200


SPLIT = """\
name: split
agents:
  model: {type: llm, with: {model: my-model, stream: false}}
phases:
  - id: each
    agent: model
    foreach: [one, two]
    with: {prompt: "{{ item }}"}
"""


def test_a_phase_counts_a_failed_launch_after_a_crashed_one(tmp_path):
    """Launch 1: item one spends, item two fails (the phase fails, its spending in its
    phase_failed); launch 2 (resumed): item two hangs and the process is killed (no end
    of the phase in that launch); launch 3: item two answers. The phase records both
    items' tokens, as a run that never stopped would."""
    import threading

    hang = threading.Event()  # launch 2's call of item two has arrived
    release = threading.Event()
    mode = ["fail"]

    def answer(request):
        if "two" not in request["messages"][-1]["content"]:
            return "some words back"
        if mode[0] == "fail":
            return Reply(status=400, json={"error": {"message": "bad item"}})
        if mode[0] == "hang":
            hang.set()
            release.wait(60)
        return "two words"

    path = tmp_path / "split.yaml"
    path.write_text(SPLIT, encoding="utf-8")
    with FakeOpenAI(answer=answer) as srv:
        env = _env(tmp_path, srv)
        orch = functools.partial(_orch, tmp_path, env)
        first = orch("run", str(path))
        assert first.returncode == 1, first.stderr
        run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
        one = json.loads(orch("status", run_id, "--json").stdout)["tokens"]["total"]
        assert one == 4  # item one: 1 prompt word, 3 answered
        mode[0] = "hang"
        try:
            _killed_at(hang, tmp_path, env, "resume", run_id)
        finally:
            release.set()
        crashed = json.loads(orch("status", run_id, "--json").stdout)
        assert crashed["status"] == "interrupted"
        assert crashed["phases"][0]["state"] == "running"  # launch 2 recorded no end
        mode[0] = "ok"
        third = orch("resume", run_id)
        assert third.returncode == 0, third.stderr
        # item one's 4 tokens (launch 1) and item two's 3 (launch 3)
        status = json.loads(orch("status", run_id, "--json").stdout)
        assert status["status"] == "completed"
        assert status["phases"][0]["tokens"]["total"] == 7
        assert status["tokens"]["total"] == 7
        stats = json.loads(orch("stats", "--json").stdout)
        assert stats["phases"][0]["tokens"] == 7


_MODEL = "{type: llm, with: {model: my-model, stream: false%s}}"
#: a workflow of one phase, killed in its second call; its answers, in the order asked
#: (None: the killed call), and the number of calls launch 1 made before the kill
KILLED = {
    "foreach": (
        "  model: MODEL\nphases:\n  - id: each\n    agent: model\n"
        '    foreach: [one, two]\n    max_parallel: 1\n    with: {prompt: "{{ item }}"}\n',
        ["some words back", None, "two words"],
    ),
    "repeat": (
        "  model: MODEL\nphases:\n  - id: each\n    agent: model\n    repeat: {max: 2}\n"
        "    with: {prompt: \"{{ ['one', 'two'][iteration.n - 1] }}\"}\n",
        ["some words back", None, "two words"],
    ),
    # attempt 1's answer is no JSON (a failed call that used tokens), attempt 2 is killed
    "retry": (
        "  model: MODEL\nphases:\n  - id: each\n    agent: model\n"
        "    retries: {attempts: 1, delay: 10ms}\n"
        "    with: {prompt: question, response_format: json}\n",
        ["not json", None, '{"a": 1}'],
    ),
    # turn 1 (triage) hands off, turn 2 (billing) is killed; resumed, the handoff starts again
    "handoff": (
        "  triage: MODEL\n  billing: MODEL\nphases:\n  - id: each\n"
        "    handoff: {agents: [triage, billing], start: triage}\n"
        "    with: {prompt: ticket, response_format: json}\n",
        ['{"handoff": "billing"}', None, '{"handoff": "billing"}', '{"done": true}'],
    ),
}


@pytest.mark.parametrize("shape", sorted(KILLED))
def test_what_a_killed_launch_used_still_counts(tmp_path, shape):
    """Launch 1 makes one call (a foreach item, a repeat iteration, a failed attempt, a
    handoff turn), then is killed in the second: the phase records no end. Resumed, the
    phase completes and records every call's tokens, the killed launch's first one too:
    each of those steps records what the phase used so far."""
    import threading

    text, answers = KILLED[shape]
    hang = threading.Event()  # the second call has arrived
    release = threading.Event()
    asked = [0]

    def answer(request):
        n = asked[0]
        asked[0] += 1
        if answers[n] is None:
            hang.set()
            release.wait(60)
            return Reply(status=500, json={"error": {"message": "too late"}})  # no usage
        return answers[n]

    with FakeOpenAI(answer=answer) as srv:
        path = tmp_path / "killed.yaml"
        model = _MODEL % f', base_url: "{srv.base_url}"'
        path.write_text(f"name: killed\nagents:\n{text.replace('MODEL', model)}")
        env = _env(tmp_path, srv)
        orch = functools.partial(_orch, tmp_path, env)
        try:
            _killed_at(hang, tmp_path, env, "run", str(path))
        finally:
            release.set()
        run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
        crashed = json.loads(orch("status", run_id, "--json").stdout)
        assert crashed["phases"][0]["state"] == "running"  # no end recorded
        resumed = orch("resume", run_id)
        assert resumed.returncode == 0, resumed.stderr
        assert asked[0] == len(answers)
        # every answered call's tokens: what the server reported for each
        status = json.loads(orch("status", run_id, "--json").stdout)
        assert status["phases"][0]["tokens"]["total"] == sum(srv.reported)
        assert status["tokens"]["total"] == sum(srv.reported)


def test_a_python_caller_passing_prior_outcomes_has_what_they_spent_counted(tmp_path):
    """``execute(plan, prior=...)`` (here ``run_sync``) with an earlier run's outcomes, and
    nothing else: their recorded tokens count, as ``orch resume`` counts them."""
    from orchestrator.engine import run_sync
    from orchestrator.plan import compile_plan
    from orchestrator.spec import load_workflow

    with FakeOpenAI(answer=lambda request: "some words back") as srv:
        text = _research_then("write", srv=srv, budget="budget: {tokens: 3}\n")
        paid = compile_plan(load_workflow(text=text))
        first = run_sync(paid)
        assert first.status == "failed"
        assert len(srv.requests) == 1  # research spent the budget; write was refused
        again = run_sync(paid, prior=first.phases)
        # research is kept and its 4 tokens count: write is refused again, no paid call
        assert again.status == "failed"
        assert again.phases["research"].status == "completed"
        assert "the run's budget is used up: 4 of 3 tokens" in (again.error or "")
        assert len(srv.requests) == 1

    # a phase that failed is run again: what its failed run used counts in what it records
    answer = _TwoBroken()

    with FakeOpenAI(answer=answer) as srv:
        split = compile_plan(load_workflow(text=_split(srv)))
        first = run_sync(split)
        assert first.status == "failed"
        assert first.phases["each"].metadata["tokens"]["total"] == 4  # item one
        answer.broken = False
        again = run_sync(split, prior=first.phases)
        assert again.status == "completed"
        # 4 (item one, the failed run) + 4 (item one again) + 4 (item two)
        assert again.phases["each"].metadata["tokens"]["total"] == 12


def test_a_python_caller_resuming_from_the_store_passes_the_resume_as_options(tmp_path):
    """``prepare_resume`` then ``execute(plan, prior=r.prior, options=r.options())``: the
    resume's options carry what earlier launches spent (and the items they kept), so
    the failed launch's tokens count as they do for ``orch resume``."""
    import asyncio

    from orchestrator.engine import execute
    from orchestrator.engine.resume import prepare_resume
    from orchestrator.plan import compile_plan
    from orchestrator.spec import load_workflow
    from orchestrator.state.sqlite import open_store

    answer = _TwoBroken()

    with FakeOpenAI(answer=answer) as srv:
        path = tmp_path / "split.yaml"
        path.write_text(_split(srv), encoding="utf-8")
        env = _env(tmp_path, srv)
        first = _orch(tmp_path, env, "run", str(path))
        assert first.returncode == 1, first.stderr
        run_id = json.loads(_orch(tmp_path, env, "runs", "--json").stdout)[0]["id"]
        answer.broken = False
        plan = compile_plan(load_workflow(path))

        async def go_on():
            with open_store(tmp_path / ".orch") as store:
                r = prepare_resume(store, store.get_run(run_id), plan)
                return await execute(
                    plan, run_id=run_id, prior=r.prior, options=r.options(), sinks=[store.submit]
                )

        result = asyncio.run(go_on())
        assert result.status == "completed"
        assert len(srv.requests) == 3  # one, two (failed), two again: one was kept
        # item one's 4 tokens (the failed launch) and item two's 4 (this one)
        assert result.phases["each"].metadata["tokens"]["total"] == 8
        status = json.loads(_orch(tmp_path, env, "status", run_id, "--json").stdout)
        assert status["status"] == "completed"
        assert status["tokens"]["total"] == 8


def test_a_changed_phase_run_again_by_resume_force_counts_its_earlier_run_too(tmp_path):
    """A completed phase whose definition changed runs again (`orch resume --force`): the
    calls of its first run were made in this run, so they count in what it records."""
    answer = _TwoBroken()
    with FakeOpenAI(answer=answer) as srv:
        path = tmp_path / "two.yaml"
        text = _research_then("two", srv=srv)
        path.write_text(text, encoding="utf-8")
        env = _env(tmp_path, srv)
        orch = functools.partial(_orch, tmp_path, env)
        assert orch("run", str(path)).returncode == 1
        run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
        answer.broken = False
        path.write_text(text.replace('"research"', '"research again"'), encoding="utf-8")
        resumed = orch("resume", run_id, "--force")
        assert resumed.returncode == 0, resumed.stderr
        assert "changed, with their downstream: research, write" in resumed.stderr
        status = json.loads(orch("status", run_id, "--json").stdout)
        tokens = {p["id"]: p["tokens"]["total"] for p in status["phases"]}
        # research: 4 (its first run) + 5 (run again); write: 4
        assert tokens == {"research": 9, "write": 4}
        assert status["tokens"]["total"] == 13


def _research_then(write: str, *, srv: FakeOpenAI | None = None, budget: str = "") -> str:
    """Two llm phases, research then write (``write``: its prompt), calling ``srv`` when
    given (else OPENAI_BASE_URL says where), with ``budget`` (a YAML line) when given."""
    url = f', base_url: "{srv.base_url}"' if srv is not None else ""
    return (
        "name: paid\nagents:\n"
        f"  model: {{type: llm, with: {{model: my-model, stream: false{url}}}}}\n"
        f"{budget}phases:\n"
        '  - id: research\n    agent: model\n    with: {prompt: "research"}\n'
        "  - id: write\n    depends_on: [research]\n    agent: model\n"
        f'    with: {{prompt: "{write}"}}\n'
    )


class _TwoBroken:
    """A FakeOpenAI answer: a 400 for item two while ``broken``, else 3 words back."""

    def __init__(self) -> None:
        self.broken = True

    def __call__(self, request: dict[str, Any]) -> str | Reply:
        if self.broken and "two" in request["messages"][-1]["content"]:
            return Reply(status=400, json={"error": {"message": "bad item"}})
        return "some words back"


def _split(srv: FakeOpenAI) -> str:
    """SPLIT calling ``srv`` (its ``base_url`` in ``with``: no environment needed)."""
    return SPLIT.replace("stream: false", f'stream: false, base_url: "{srv.base_url}"')


def _killed_at(hang: Any, cwd: Path, env: dict[str, str], *args: str) -> None:
    """Run the real `orch ARGS` and kill it (SIGKILL, its process group) once ``hang`` is
    set: the fake server holds that call, so the process dies in the middle of it."""
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120  # a bound on a hang, not a timing
        while not hang.wait(0.05):
            assert time.monotonic() < deadline and proc.poll() is None, "never called"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _env(tmp_path: Path, srv: FakeOpenAI) -> dict[str, str]:
    """The environment of a real `orch` whose llm calls go to ``srv``."""
    import os

    return {
        **os.environ,
        "NO_COLOR": "1",
        "OPENAI_BASE_URL": srv.base_url,
        "ORCH_STATE_DIR": str(tmp_path / ".orch"),
    }


def _orch(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real `orch` command, run in ``cwd`` with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


PARENT = """\
name: parent
agents:
  model: {{type: llm, with: {{model: my-model, stream: false}}}}
{budget}
phases:
  - id: ask
    agent: model
    with: {{prompt: "first question"}}
  - id: sub
    depends_on: [ask]
    agent: workflow
    with: {{path: child.yaml}}
    {phase_budget}
  - id: slow
    depends_on: [ask]
    agent: sleep
    with: {{seconds: {slow}}}
"""

CHILD = """\
name: child
agents:
  model: {type: llm, with: {model: my-model, stream: false}}
phases:
  - id: book
    agent: echo
    with: {text: booked}
    compensate: {agent: echo, with: {text: unbook}}
  - id: loop
    depends_on: [book]
    foreach: "{{ range(10) | list }}"
    max_parallel: 1
    agent: model
    with: {prompt: "item {{ item }}"}
"""


def run_parent(tmp_path, srv, *, budget="", phase_budget="", slow=30, child=CHILD):
    (tmp_path / "child.yaml").write_text(child, encoding="utf-8")
    text = PARENT.format(budget=budget, phase_budget=phase_budget, slow=slow)
    return run_text(tmp_path / "parent.yaml", text, srv)


def test_a_sub_run_spends_from_its_parents_budget_and_stops_when_it_is_used_up(tmp_path):
    # ask: "first question" + "ok then" = 4 tokens; each call of the sub-run: 4 tokens
    with FakeOpenAI(["ok then"]) as srv:
        result, events = run_parent(tmp_path, srv, budget="budget: {tokens: 10}")
        prompts = [r.json()["messages"][-1]["content"] for r in srv.requests]
    assert result.exit_code == 1, result.output
    # 4 (ask) + 4 = 8 < 10 lets the sub-run's second call go; 12 >= 10 refuses its third
    assert prompts == ["first question", "item 0", "item 1"]
    failed = next(e for e in events if e["event"] == "phase_failed" and e["phase"] == "sub")
    error = failed["data"]["error"]
    assert error.startswith("sub-workflow 'child.yaml' failed: phase 'loop' failed: ")
    assert (
        "8 of 10 items failed; item 3 of 10 (index 2): the budget of workflow 'parent' (the run"
        " that started this sub-run) is used up: 12 of 10 tokens spent (budget.tokens) (used by"
        " sub 8 tokens, ask 4 tokens); no more agent calls"
    ) in error
    # a clean stop: the parent's other running phase is cancelled, the message names the budget
    slow = next(e for e in events if e.get("phase") == "slow" and e["event"] == "phase_failed")
    assert slow["data"]["status"] == "cancelled"
    end = events[-1]
    assert end["event"] == "workflow_failed" and "budget.tokens" in end["data"]["error"]
    assert "budget.tokens" in result.stderr


def test_the_calling_phases_budget_bounds_its_sub_run_and_its_usage_is_reported(tmp_path):
    with FakeOpenAI(["ok then"]) as srv:
        result, events = run_parent(tmp_path, srv, phase_budget="budget: {tokens: 6}", slow=0.01)
        calls = len(srv.requests)
    assert result.exit_code == 1, result.output
    assert calls == 3  # ask (4 tokens, not the phase's), then 0 + 4 < 6, 8 >= 6 refuses
    failed = next(e for e in events if e["event"] == "phase_failed" and e["phase"] == "sub")
    assert (
        "the budget of phase 'sub' (the phase that started this sub-run) is used up: 8 of 6"
        " tokens spent (budget.tokens); no more agent calls"
    ) in failed["data"]["error"]


def test_what_a_sub_run_spent_is_the_calling_phases_usage_in_events_status_and_stats(tmp_path):
    price = {"input_per_1m": 1000, "output_per_1m": 2000}  # $0.006 a call of 2 + 2 tokens
    child = CHILD.replace("stream: false}", f"stream: false, price: {json.dumps(price)}}}")
    with FakeOpenAI(["ok then"]) as srv:
        result, events = run_parent(
            tmp_path, srv, budget="budget: {tokens: 1000}", slow=0.01, child=child
        )
    assert result.exit_code == 0, result.output
    sub = next(e for e in events if e["event"] == "phase_completed" and e["phase"] == "sub")
    assert sub["data"]["metadata"]["tokens"] == {"prompt": 20, "completion": 20, "total": 40}
    assert sub["data"]["metadata"]["cost"] == pytest.approx(10 * 0.006)
    end = events[-1]
    assert end["data"]["tokens"]["total"] == 44  # ask's 4 and the sub-run's 40
    assert end["data"]["cost"] == pytest.approx(0.06)
    status = _status(end["run_id"])
    assert {p["id"]: p["cost"] for p in status["phases"]}["sub"] == pytest.approx(0.06)
    stats = _stats()
    assert stats["workflows"][0]["tokens"] == 44


FAILING_WITH_FALLBACK = """\
name: main
agents:
  model: {type: llm, with: {model: my-model, stream: false}}
error_handling: {fallback_workflow: plan-b.yaml}
phases:
  - id: ask
    agent: model
    with: {prompt: "first question"}
  - id: boom
    depends_on: [ask]
    agent: shell
    with: {command: "exit 3"}
"""

PLAN_B = """\
name: plan-b
agents:
  model: {type: llm, with: {model: my-model, stream: false}}
phases:
  - id: retry
    agent: model
    with: {prompt: "plan b"}
outputs: {answer: "{{ phases.retry.output }}"}
"""


def test_what_a_fallback_workflow_used_counts_as_its_phases_and_the_runs_tokens(tmp_path):
    # ask: "first question" + "ok then" = 4 tokens; plan-b's call: "plan b" + "ok then" = 4
    (tmp_path / "plan-b.yaml").write_text(PLAN_B, encoding="utf-8")
    with FakeOpenAI(["ok then"]) as srv:
        result, events = run_text(tmp_path / "main.yaml", FAILING_WITH_FALLBACK, srv)
        calls = len(srv.requests)
    assert result.exit_code == 0, result.output
    assert calls == 2
    fallback = next(
        e for e in events if e["event"] == "phase_completed" and e["phase"] == "fallback_workflow"
    )
    assert fallback["data"]["metadata"]["tokens"] == {"prompt": 2, "completion": 2, "total": 4}
    end = events[-1]
    assert end["event"] == "workflow_completed"
    assert end["data"]["tokens"] == {"prompt": 4, "completion": 4, "total": 8}


FALLBACK_FAILS = """\
name: fallback-fails
agents:
  model:
    type: llm
    with: {model: my-model, stream: false, price: {input_per_1m: 1000, output_per_1m: 2000}}
phases:
  - id: ask
    agent: shell
    with: {command: "exit 3"}
    fallback:
      agent: model
      with: {prompt: "plan b", response_format: json}
"""


def test_what_a_failed_fallback_used_is_its_phases_usage_in_events_status_and_stats(tmp_path):
    # the fallback's answer "not json" is no JSON: the call fails after using 2 + 2 tokens
    with FakeOpenAI(["not json"]) as srv:
        result, events = run_text(tmp_path / "fallback.yaml", FALLBACK_FAILS, srv)
        calls = len(srv.requests)
    assert result.exit_code == 1, result.output
    assert calls == 1
    failed = next(e for e in events if e["event"] == "phase_failed" and e["phase"] == "ask")
    assert "fallback failed: the model's answer is not valid JSON" in failed["data"]["error"]
    used = {"prompt": 2, "completion": 2, "total": 4}
    assert failed["data"]["metadata"]["tokens"] == used
    assert failed["data"]["metadata"]["cost"] == pytest.approx(0.006)
    end = events[-1]
    assert end["event"] == "workflow_failed"
    assert end["data"]["tokens"] == used and end["data"]["cost"] == pytest.approx(0.006)
    status = _status(end["run_id"])
    assert status["tokens"] == used
    assert {p["id"]: p["cost"] for p in status["phases"]}["ask"] == pytest.approx(0.006)
    stats = _stats()
    assert stats["workflows"][0]["tokens"] == 4
    assert stats["workflows"][0]["cost"] == pytest.approx(0.006)


RETRIED = """\
name: retried
agents:
  model:
    type: llm
    with: {model: my-model, stream: false, price: {input_per_1m: 1000, output_per_1m: 2000}}
phases:
  - id: ask
    agent: model
    retries: {attempts: 1, delay: 10ms}
    with: {prompt: "question", response_format: json}
  - id: plan
    depends_on: [ask]
    agent: model
    with: {prompt: "question", response_format: json}
    fallback:
      agent: model
      with: {prompt: "question"}
  - id: items
    depends_on: [plan]
    foreach: "{{ [1, 2] }}"
    max_parallel: 1
    agent: model
    retries: {attempts: 1, delay: 10ms}
    with: {prompt: "question", response_format: json}
"""


def test_a_completed_phase_records_what_its_failed_attempts_and_fallback_used_too(tmp_path):
    # every call: prompt "question" = 1 token; "not json" and '{"a": 1}' 2 tokens each, so
    # 3 tokens ($0.005) a call, a failed one (the answer is no JSON) as a successful one
    answers = ["not json", '{"a": 1}', "not json", "ok then"]
    answers += ["not json", '{"a": 1}', "not json", '{"a": 1}']  # each item: a failure first
    with FakeOpenAI(answers) as srv:
        result, events = run_text(tmp_path / "retried.yaml", RETRIED, srv)
        calls = len(srv.requests)
    assert result.exit_code == 0, result.output
    assert calls == 8
    done = {e["phase"]: e["data"] for e in events if e["event"] == "phase_completed"}
    assert done["ask"]["attempts"] == 2 and done["plan"]["fallback_used"] is True
    two_calls = {"prompt": 2, "completion": 4, "total": 6}
    assert done["ask"]["metadata"]["tokens"] == two_calls  # the failed attempt and the retry
    assert done["ask"]["metadata"]["cost"] == pytest.approx(0.01)
    assert done["ask"]["metadata"]["model"] == "my-model"  # what the result reported stays
    assert done["plan"]["metadata"]["tokens"] == two_calls  # the failed primary, the fallback
    four_calls = {"prompt": 4, "completion": 8, "total": 12}
    assert done["items"]["metadata"]["tokens"] == four_calls
    end = events[-1]
    assert end["event"] == "workflow_completed"
    assert end["data"]["tokens"] == {"prompt": 8, "completion": 16, "total": 24}
    assert end["data"]["cost"] == pytest.approx(0.04)
    status = _status(end["run_id"])
    assert status["tokens"]["total"] == 24
    assert {p["id"]: p["cost"] for p in status["phases"]} == pytest.approx(
        {"ask": 0.01, "plan": 0.01, "items": 0.02}
    )
    stats = _stats()
    assert stats["workflows"][0]["tokens"] == 24
    assert stats["workflows"][0]["cost"] == pytest.approx(0.04)


CACHED = """\
name: cached
agents:
  model: {type: llm, with: {model: my-model, stream: false}}
phases:
  - id: ask
    agent: model
    cache: true
    with: {prompt: "question"}
"""


def test_a_cache_hit_made_no_call_and_records_no_tokens(tmp_path):
    with FakeOpenAI(["ok then"]) as srv:
        first, first_events = run_text(tmp_path / "cached.yaml", CACHED, srv)
        second, events = run_text(tmp_path / "cached.yaml", CACHED, srv)
        calls = len(srv.requests)
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert calls == 1
    made = next(e for e in first_events if e["event"] == "phase_completed")["data"]
    assert made["metadata"]["tokens"] == {"prompt": 1, "completion": 2, "total": 3}
    hit = next(e for e in events if e["event"] == "phase_completed")["data"]
    assert hit["cached"] is True and hit["attempts"] == 0
    assert "tokens" not in hit["metadata"] and hit["metadata"]["model"] == "my-model"
    assert "tokens" not in events[-1]["data"] or events[-1]["data"]["tokens"]["total"] == 0
    stats = _stats()
    assert stats["workflows"][0]["tokens"] == 3  # the call made once, not counted twice
