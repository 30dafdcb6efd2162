"""The built-in agents through the real `orch run` and `orch validate` commands."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli import app
from tests.agents.test_shell import PAYLOADS
from tests.servers import FakeOpenAI, HTTPServer, Reply

HEADER = "# yaml-language-server: $schema=../schemas/workflow.schema.json\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(HEADER + text)
    return path


def orch(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


INJECTION = """
name: injection
inputs:
  payloads: {type: array}
phases:
  - id: up
    agent: echo
    with: {text: "{{ inputs.payloads }}"}
  - id: as_string
    foreach: "{{ phases.up.output }}"
    agent: shell
    with: {command: "printf '%s' {{ item }}"}
  - id: as_lone_template
    foreach: "{{ phases.up.output }}"
    agent: shell
    with: {command: "{{ item }}", env: {PATH: "/nonexistent"}}
    continue_on_error: true
  - id: as_argv
    foreach: "{{ phases.up.output }}"
    agent: shell
    with: {command: [printf, "%s", "{{ item }}"]}
  - id: as_env
    foreach: "{{ phases.up.output }}"
    agent: shell
    with: {command: 'printf "%s" "$V"', env: {V: "{{ item }}"}}
  - id: direct
    agent: shell
    with: {command: "printf '%s' {{ phases.up.output[0] }} {{ phases.up.output[1] }}"}
outputs:
  as_string: "{{ phases.as_string.output }}"
  as_argv: "{{ phases.as_argv.output }}"
  as_env: "{{ phases.as_env.output }}"
  direct: "{{ phases.direct.output }}"
"""


def test_x1_injection_through_orch_run_creates_no_file_and_keeps_every_byte(tmp_path):
    """Reliability X1, end to end: upstream output -> shell string, lone template, argv, env."""
    payloads = [p for p in PAYLOADS if "\x00" not in p]
    assert len(payloads) >= 30
    flow = write(tmp_path, "inject.yaml", INJECTION)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"payloads": payloads}, ensure_ascii=False))
    before = set(tmp_path.iterdir())
    result = orch("run", str(flow), "--inputs-file", str(inputs))
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs["as_string"] == payloads
    assert outputs["as_argv"] == payloads
    assert outputs["as_env"] == payloads
    assert outputs["direct"] == payloads[0] + payloads[1]  # printf repeats '%s' per word
    assert set(tmp_path.iterdir()) == before  # no MARKER (nor anything else) was created
    assert not list(Path.cwd().glob("MARKER"))


def test_validate_warns_where_an_output_is_spliced_into_a_shell_string(tmp_path):
    flow = write(tmp_path, "inject.yaml", INJECTION)
    result = orch("validate", str(flow))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "warning:" in line]
    # the `direct` phase (line numbers count the schema header line); argv and env are safe
    assert lines == [
        f"{flow}:29:21: warning: the output of phases.up is spliced into a shell command "
        "string; it is shell-quoted, but an argv list or env is safer"
    ]


def test_python_function_next_to_the_workflow(tmp_path):
    (tmp_path / "calc_mod_e2e.py").write_text("def double(n):\n    return n * 2\n")
    flow = write(
        tmp_path,
        "calc.yaml",
        """
name: calc
phases:
  - id: twice
    agent: python
    with: {function: "calc_mod_e2e:double", kwargs: {n: 21}}
outputs:
  answer: "{{ phases.twice.output }}"
""",
    )
    result = orch("run", str(flow))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"answer": 42}


def test_workflow_agent_runs_a_sub_workflow_with_inputs_and_outputs(tmp_path):
    (tmp_path / "lib").mkdir()
    write(
        tmp_path / "lib",
        "child.yaml",
        """
name: child
inputs:
  n: {type: integer}
phases:
  - id: square
    agent: echo
    with: {text: "{{ inputs.n * inputs.n }}"}
outputs:
  squared: "{{ phases.square.output }}"
""",
    )
    flow = write(
        tmp_path,
        "parent.yaml",
        """
name: parent
phases:
  - id: sub
    agent: workflow
    with: {path: lib/child.yaml, inputs: {n: 7}}
outputs:
  result: "{{ phases.sub.output.squared }}"
""",
    )
    assert orch("validate", str(flow)).exit_code == 0
    result = orch("run", str(flow))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"result": 49}


def test_workflow_recursion_is_found_at_validate(tmp_path):
    write(
        tmp_path,
        "b.yaml",
        "name: b\nphases:\n  - id: back\n    agent: workflow\n    with: {path: a.yaml}\n",
    )
    a = write(
        tmp_path,
        "a.yaml",
        "name: a\nphases:\n  - id: go\n    agent: workflow\n    with: {path: b.yaml}\n",
    )
    self_ref = write(
        tmp_path,
        "self.yaml",
        "name: s\nphases:\n  - id: me\n    agent: workflow\n    with: {path: ./self.yaml}\n",
    )
    result = orch("validate", str(a))
    assert result.exit_code == 2
    assert f"{a}:6:18: workflow recursion: a.yaml -> b.yaml -> a.yaml" in result.output
    result = orch("validate", str(self_ref))
    assert f"{self_ref}:6:18: workflow recursion: self.yaml -> self.yaml" in result.output
    assert "Traceback" not in result.output


def test_http_phase_with_a_named_agent_and_retry_after(tmp_path):
    hits = {"n": 0}

    def flaky(request):
        hits["n"] += 1
        if hits["n"] == 1:
            return Reply(429, headers={"Retry-After": "0"})
        return Reply(200, json={"account": request.path.rsplit("/", 1)[1]})

    with HTTPServer({("GET", "/accounts/ACC-1"): flaky}) as srv:
        flow = write(
            tmp_path,
            "api.yaml",
            f"""
name: api
inputs:
  account: {{type: string}}
agents:
  crm:
    type: http
    with: {{base_url: "{srv.url}", headers: {{X-Team: ops}}}}
phases:
  - id: fetch
    agent: crm
    retries: {{attempts: 2, delay: 10ms}}
    with: {{path: "/accounts/{{{{ inputs.account }}}}"}}
outputs:
  account: "{{{{ phases.fetch.output.account }}}}"
""",
        )
        result = orch("run", str(flow), "--input", "account=ACC-1", "--events", "jsonl")
        keys = [r.headers["idempotency-key"] for r in srv.requests]
        teams = {r.headers["x-team"] for r in srv.requests}
    assert result.exit_code == 0, result.output
    evs = events(result.stdout)
    assert [e["event"] for e in evs if e["event"].startswith("phase_")] == [
        "phase_started",
        "phase_retry",
        "phase_completed",
    ]
    assert evs[-1]["data"]["outputs"] == {"account": "ACC-1"}
    run_id = evs[0]["run_id"]
    assert keys == [f"{run_id}/fetch/1", f"{run_id}/fetch/2"]
    assert teams == {"ops"}


def test_llm_tokens_stream_as_events_and_usage_is_recorded(tmp_path):
    with FakeOpenAI(["Short and sweet"]) as srv:
        flow = write(
            tmp_path,
            "llm.yaml",
            f"""
name: llm
agents:
  writer:
    type: llm
    with: {{base_url: "{srv.base_url}", model: tiny, api_key: "{{{{ secrets.ORCH_E2E_KEY }}}}"}}
phases:
  - id: write
    agent: writer
    with: {{prompt: "Write a title"}}
outputs:
  title: "{{{{ phases.write.output }}}}"
""",
        )
        result = orch(
            "run", str(flow), "--events", "jsonl", env={"ORCH_E2E_KEY": "sk-very-secret-123"}
        )
        auth = srv.requests[0].headers["authorization"]
    assert result.exit_code == 0, result.output
    evs = events(result.stdout)
    texts = [e["data"]["text"] for e in evs if e["event"] == "phase_stream"]
    # with a secret in the run, the masker may hold pieces back until they are safe
    assert texts and "".join(texts) == "Short and sweet"
    done = next(e for e in evs if e["event"] == "phase_completed")
    assert done["data"]["metadata"]["tokens"] == {"prompt": 3, "completion": 3, "total": 6}
    assert evs[-1]["data"]["outputs"] == {"title": "Short and sweet"}
    assert auth == "Bearer sk-very-secret-123"
    assert "sk-very-secret-123" not in result.output


def test_a_failing_command_is_a_failed_phase_with_exit_1(tmp_path):
    flow = write(
        tmp_path,
        "fail.yaml",
        """
name: fails
phases:
  - id: broken
    agent: shell
    with: {command: "echo oops >&2; exit 4"}
""",
    )
    result = orch("run", str(flow))
    assert result.exit_code == 1
    assert "command exited with code 4; stderr: oops" in result.output
    assert "Traceback" not in result.output


def test_t1_a_phase_timeout_through_orch_run_leaves_no_process_alive(tmp_path):
    """Reliability T1 through the engine: the phase times out; the tree, setsid included, dies."""
    from tests.agents.test_shell import _tree_command, until_the_whole_tree_timed_out

    def trial(pids: Path, seconds: float) -> None:
        flow = write(
            tmp_path,
            "tree.yaml",
            f"""
name: tree
phases:
  - id: spawn
    agent: shell
    timeout: {int(seconds * 1000)}ms
    with:
      kill_grace: 1
      command: |
        {_tree_command(pids)}
""",
        )
        result = orch("run", str(flow), "--events", "jsonl")
        assert result.exit_code == 1
        failed = next(e for e in events(result.stdout) if e["event"] == "phase_failed")
        assert "timed out" in failed["data"]["error"]

    until_the_whole_tree_timed_out(tmp_path, trial)


def test_compensation_shell_commands_are_shell_quoted_too(tmp_path):
    payload = "x'; touch MARKER; echo '$(touch MARKER2)`touch MARKER3`"
    flow = write(
        tmp_path,
        "saga.yaml",
        """
name: saga
inputs:
  v: {type: string}
phases:
  - id: book
    agent: echo
    with: {text: "{{ inputs.v }}"}
    compensate: {agent: shell, with: {command: "printf '%s' {{ phases.book.output }} > undone"}}
  - id: pay
    agent: fail
    depends_on: [book]
    with: {transient: false}
""",
    )
    result = orch("run", str(flow), "--input", f"v={payload}")
    assert result.exit_code == 1
    assert (tmp_path / "undone").read_text() == payload
    assert not list(tmp_path.glob("MARKER*"))


def test_a_failing_sub_workflow_fails_the_phase_and_templated_recursion_stops(tmp_path):
    write(tmp_path, "bad_child.yaml", "name: c\nphases:\n  - id: x\n    agent: fail\n")
    parent = write(
        tmp_path,
        "parent.yaml",
        "name: p\nphases:\n  - id: sub\n    agent: workflow\n    with: {path: bad_child.yaml}\n",
    )
    result = orch("run", str(parent), "--events", "jsonl")
    assert result.exit_code == 1
    failed = next(e for e in events(result.stdout) if e["event"] == "phase_failed")
    assert "sub-workflow" in failed["data"]["error"] and "failed" in failed["data"]["error"]
    # a path from a template cannot be followed at validate; the engine's depth limit stops it
    loop = write(
        tmp_path,
        "loop.yaml",
        "name: l\ninputs:\n  me: {type: string, default: loop.yaml}\nphases:\n"
        "  - id: again\n    agent: workflow\n    with: {path: '{{ inputs.me }}'}\n",
    )
    assert orch("validate", str(loop)).exit_code == 0
    result = orch("run", str(loop), "--events", "jsonl")
    assert result.exit_code == 1
    assert "nests deeper than" in result.stdout
    assert "Traceback" not in result.output


def test_sigterm_to_orch_run_stops_a_running_command_tree(tmp_path, processes):
    """A terminated run (exit 143) leaves no process of its shell phases behind."""
    import signal
    import sys

    from tests.agents.test_shell import _alive, _kill_leftovers, _tree_command, _wait_for_pids

    pids = tmp_path / "pids"
    pids.touch()
    flow = write(
        tmp_path,
        "tree.yaml",
        f"""
name: tree
phases:
  - id: spawn
    agent: shell
    with:
      kill_grace: 1
      command: |
        {_tree_command(pids)}
""",
    )
    orch_bin = str(Path(sys.executable).parent / "orch")
    proc = processes.start([orch_bin, "run", str(flow)])
    try:
        recorded = _wait_for_pids(pids, 4)
        assert len(recorded) == 4
        proc.proc.send_signal(signal.SIGTERM)
        code, _, err = proc.finish()
        assert code == 143, err
        assert [p for p in _wait_for_pids(pids, 4) if _alive(p)] == []
    finally:
        _kill_leftovers(pids)  # after the checks: a no-op when orch did its job


def test_an_http_phase_timeout_reads_like_any_other_phase_timeout(tmp_path):
    drip = Reply(200, chunks=[b"x"] * 40, delay=0.2)
    with HTTPServer({("GET", "/drip"): drip}) as srv:
        flow = write(
            tmp_path,
            "slow.yaml",
            f"name: slow\nphases:\n  - id: fetch\n    agent: http\n    timeout: 300ms\n"
            f"    with: {{url: '{srv.url}/drip'}}\n",
        )
        result = orch("run", str(flow), "--events", "jsonl", "--state-dir", str(tmp_path / "s"))
    assert result.exit_code == 1
    failed = next(e for e in events(result.stdout) if e["event"] == "phase_failed")
    assert failed["data"]["error"] == "timed out after 300ms"
