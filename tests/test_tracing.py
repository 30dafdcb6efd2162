"""OpenTelemetry traces of `orch run`, sent over OTLP/HTTP to a real receiver on 127.0.0.1
whose protobuf is decoded with opentelemetry-proto; the http agent's traceparent header and a
shell command's TRACEPARENT join the same trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.servers import FakeOpenAI, HTTPServer, Reply

ROOT = Path(__file__).resolve().parent.parent

WORKFLOW = """\
name: traced
phases:
  - id: fetch
    agent: http
    with: {{method: GET, url: "{api}/item"}}
  - id: flaky
    agent: fail
    retries: {{attempts: 1, backoff: fixed, delay: 1ms}}
    with: {{times: 1, output: ok}}
  - id: show
    agent: shell
    depends_on: [fetch]
    with: {{command: [sh, -c, 'echo "$TRACEPARENT"']}}
  - id: ask
    agent: llm
    with: {{base_url: "{llm}", model: gpt-4o-mini, prompt: "say hi", stream: false}}
  - id: nested
    agent: workflow
    with: {{path: sub.yaml}}
outputs:
  traceparent: "{{{{ phases.show.output }}}}"
"""


def _spans(receiver):
    spans = []
    for rec in receiver.requests:
        request = ExportTraceServiceRequest()
        request.ParseFromString(rec.body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attrs = {}
                    for a in span.attributes:
                        v = a.value
                        attrs[a.key] = v.WhichOneof("value") and getattr(v, v.WhichOneof("value"))
                    spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "start": span.start_time_unix_nano / 1e9,
                            "end": span.end_time_unix_nano / 1e9,
                            "attrs": attrs,
                            "status": span.status.code,
                            "service": service.get("service.name"),
                        }
                    )
    return spans


def orch(*args, cwd, env):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_phase_attempt_and_call_spans_reach_an_otlp_receiver_with_parent_links(tmp_path):
    receiver = HTTPServer({("POST", "/v1/traces"): Reply(200, body=b"")})
    api = HTTPServer({("GET", "/item"): Reply(200, json={"id": 7})})
    with receiver, api, FakeOpenAI(["hello there"]) as llm:
        (tmp_path / "wf.yaml").write_text(
            WORKFLOW.format(api=api.url, llm=llm.base_url), encoding="utf-8"
        )
        (tmp_path / "sub.yaml").write_text(
            "name: sub\nphases:\n  - {id: inner, agent: echo, with: {text: deep}}\n"
        )
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        result = orch("run", "wf.yaml", "--events", "jsonl", cwd=tmp_path, env=env)
        sent = api.requests[0].headers.get("traceparent")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    spans = _spans(receiver)
    by_name = {s["name"]: s for s in spans}
    run = by_name["run traced"]
    trace = run["trace"]
    # the trace id is in every event and in `orch status`
    assert {e["trace_id"] for e in events} == {trace}
    status = orch("status", events[0]["run_id"], "--json", cwd=tmp_path, env=dict(os.environ))
    assert json.loads(status.stdout)["trace_id"] == trace
    assert {s["trace"] for s in spans} == {trace}
    assert run["parent"] == "" and run["service"] == "orch"
    assert run["attrs"]["orch.run_id"] == events[0]["run_id"]
    ids = {s["id"]: s for s in spans}
    for pid in ("fetch", "flaky", "show", "ask", "nested"):
        phase = by_name[f"phase {pid}"]
        assert phase["parent"] == run["id"]
        assert phase["attrs"]["orch.phase.id"] == pid
        assert phase["attrs"]["orch.phase.status"] == "completed"
    # flaky: two attempt spans under its phase, the first failed (status code 2 = ERROR)
    flaky = by_name["phase flaky"]
    attempts = sorted(
        (s for s in spans if s["parent"] == flaky["id"]), key=lambda s: s["attrs"]["orch.attempt"]
    )
    assert [(a["name"], a["status"]) for a in attempts] == [("attempt 1", 2), ("attempt 2", 1)]
    assert attempts[0]["end"] <= attempts[1]["start"]
    # the http agent's call span is the traceparent it sent: service -> call -> attempt -> phase
    assert sent is not None
    version, sent_trace, sent_span, flags = sent.split("-")
    assert (version, sent_trace) == ("00", trace)
    assert int(flags, 16) & 1  # sampled
    call = ids[sent_span]
    attempt = ids[call["parent"]]
    assert attempt["name"] == "attempt 1" and ids[attempt["parent"]]["name"] == "phase fetch"
    # the shell command got TRACEPARENT in its environment: its own call span
    shown = json.loads(result.stdout.splitlines()[-1])["data"]["outputs"]["traceparent"]
    assert ids[shown.strip().split("-")[2]]["attrs"]["orch.phase.id"] == "show"
    # the llm call follows the GenAI semantic conventions
    chat = by_name["chat gpt-4o-mini"]
    assert chat["attrs"]["gen_ai.operation.name"] == "chat"
    assert chat["attrs"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat["attrs"]["gen_ai.usage.input_tokens"] == 2
    assert chat["attrs"]["gen_ai.usage.output_tokens"] == 2
    assert ids[ids[chat["parent"]]["parent"]]["name"] == "phase ask"
    # the sub-run is a child of the workflow agent's call in phase `nested`, with its own spans
    sub = by_name["run sub"]
    outer = ids[sub["parent"]]
    assert outer["attrs"]["orch.phase.id"] == "nested" and outer["name"] == "call workflow"
    inner = by_name["phase inner"]
    assert inner["parent"] == sub["id"]
    assert ids[by_name["call echo"]["parent"]]["parent"] == inner["id"]


SUB = """\
name: child
phases:
  - id: shaky
    agent: fail
    retries: {attempts: 1, backoff: fixed, delay: 1ms}
    with: {times: 1, output: ok}
  - id: deeper
    agent: workflow
    with: {path: grandchild.yaml}
"""


def test_a_sub_run_has_its_own_run_phase_and_attempt_spans_under_its_phase(tmp_path):
    receiver = HTTPServer({("POST", "/v1/traces"): Reply(200, body=b"")})
    (tmp_path / "wf.yaml").write_text(
        "name: parent\nphases:\n"
        "  - {id: first, agent: echo, with: {text: one}}\n"
        "  - {id: nested, agent: workflow, depends_on: [first], with: {path: child.yaml}}\n",
        encoding="utf-8",
    )
    (tmp_path / "child.yaml").write_text(SUB, encoding="utf-8")
    (tmp_path / "grandchild.yaml").write_text(
        "name: grandchild\nphases:\n  - {id: leaf, agent: echo, with: {text: deep}}\n",
        encoding="utf-8",
    )
    with receiver:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        result = orch("run", "wf.yaml", "--events", "jsonl", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    spans = _spans(receiver)
    ids = {s["id"]: s for s in spans}
    by_name = {s["name"]: s for s in spans}
    top = by_name["run parent"]
    assert {s["trace"] for s in spans} == {top["trace"]} == {e["trace_id"] for e in events}

    def children(span, name=None):
        return [s for s in spans if s["parent"] == span["id"] and name in (None, s["name"])]

    def phase_attempt(run_span, pid, n=1):
        (phase,) = children(run_span, f"phase {pid}")
        (attempt,) = children(phase, f"attempt {n}")
        return phase, attempt

    # parent -> phase nested -> attempt 1 -> call workflow -> run child
    _, attempt = phase_attempt(top, "nested")
    (call,) = children(attempt, "call workflow")
    (child,) = children(call)
    assert child["name"] == "run child"
    assert child["attrs"]["orch.workflow"] == "child"
    assert child["attrs"]["orch.parent.run_id"] == events[0]["run_id"]
    assert child["attrs"]["orch.parent.phase.id"] == "nested"
    assert child["attrs"]["orch.run_id"] != events[0]["run_id"]  # its own run
    assert child["attrs"]["orch.run.status"] == "completed"
    assert attempt["start"] <= child["start"] <= child["end"] <= attempt["end"]
    # the sub-run's own phases and attempts: shaky failed once, then its attempt 2 worked
    shaky, first_try = phase_attempt(child, "shaky")
    (second_try,) = children(shaky, "attempt 2")
    assert (first_try["status"], second_try["status"]) == (2, 1)  # ERROR, then OK
    assert first_try["end"] <= second_try["start"]
    assert [c["name"] for c in children(first_try)] == ["call fail"]
    # and one level deeper: child -> deeper -> attempt 1 -> call workflow -> run grandchild
    _, deeper_attempt = phase_attempt(child, "deeper")
    (deeper_call,) = children(deeper_attempt, "call workflow")
    (grandchild,) = children(deeper_call)
    assert grandchild["name"] == "run grandchild"
    _, leaf_attempt = phase_attempt(grandchild, "leaf")
    assert [c["name"] for c in children(leaf_attempt)] == ["call echo"]
    # every span of the three runs hangs, link by link, from the top run span
    for span in spans:
        while span["parent"]:
            span = ids[span["parent"]]
        assert span is top


def test_without_the_variables_nothing_of_opentelemetry_is_imported(tmp_path):
    (tmp_path / "wf.yaml").write_text(
        "name: plain\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n", encoding="utf-8"
    )
    code = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        "sys.argv = ['orch', 'run', 'wf.yaml']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


def test_a_missing_extra_is_a_warning_with_the_install_hint_and_the_run_goes_on(tmp_path):
    (tmp_path / "wf.yaml").write_text(
        "name: plain\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n", encoding="utf-8"
    )
    # a folder that shadows the opentelemetry package: import fails as without the extra
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no opentelemetry here')\n")
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), str(ROOT)]),
    }
    result = orch("run", "wf.yaml", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "warning: tracing is asked for" in result.stderr
    assert "hint: pip install 'orch-workflows[otel]'" in result.stderr
    bad = orch("run", "wf.yaml", cwd=tmp_path, env={**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"})
    assert bad.returncode == 2
    assert "OTEL_TRACES_EXPORTER 'zipkin' is not supported" in bad.stderr


SERVED = """\
name: served
triggers:
  - webhook: true
phases:
  - {id: hello, agent: echo, with: {text: hi}}
  - {id: nested, agent: workflow, depends_on: [hello], with: {path: leaf.yaml}}
"""


def test_the_runs_of_orch_serve_are_traced_each_in_a_trace_of_its_own(tmp_path):
    from tests.service.serving import Serve
    from tests.service.serving import orch as orch_at

    receiver = HTTPServer({("POST", "/v1/traces"): Reply(200, body=b"")})
    with receiver:
        srv = Serve(
            tmp_path,
            {"served": SERVED},
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
        )
        (srv.folder / "leaf.yaml").write_text(
            "name: leaf\nphases:\n  - {id: leaf, agent: echo, with: {text: deep}}\n",
            encoding="utf-8",
        )
        with srv:
            run_ids = []
            for _ in range(2):
                r = srv.http.post("/api/workflows/served/runs", json={})
                assert r.status_code == 202, r.text
                run_ids.append(r.json()["id"])
                assert srv.run_when(run_ids[-1], "completed", "failed")["status"] == "completed"
            stopped = srv.stop()  # the service's spans still batched go out as it stops
        assert stopped == 143, "\n".join(srv.lines)  # SIGTERM, as always for orch serve
    spans = _spans(receiver)
    runs = {s["attrs"]["orch.run_id"]: s for s in spans if s["name"] == "run served"}
    assert set(runs) == set(run_ids)
    assert len({s["trace"] for s in runs.values()}) == 2  # each run a trace of its own
    for run_id, run in runs.items():
        assert run["parent"] == ""
        (phase,) = [s for s in spans if s["name"] == "phase nested" and s["trace"] == run["trace"]]
        assert phase["parent"] == run["id"]
        (leaf,) = [s for s in spans if s["name"] == "run leaf" and s["trace"] == run["trace"]]
        assert leaf["attrs"]["orch.parent.run_id"] == run_id
        # the trace id is the run's, in `orch status` as for `orch run`
        status = orch_at("status", run_id, "--json", state_dir=srv.state_dir)
        assert json.loads(status.stdout)["trace_id"] == run["trace"]


def test_no_secret_reaches_any_span_of_a_failed_call_or_of_a_sub_run_given_it(tmp_path):
    # a shell command fails with the token in its stderr: directly, and in a sub-run
    # that gets the token as an input (its own masker must mask the parent's secrets)
    secret = "s3cr3t-TOKEN-value-123456"
    fails = 'echo "auth failed for $T" >&2; exit 1'
    (tmp_path / "direct.yaml").write_text(
        "name: direct\nphases:\n  - id: call\n    agent: shell\n"
        f"    with: {{command: '{fails}', env: {{T: '{{{{ secrets.API_TOKEN }}}}'}}}}\n",
        encoding="utf-8",
    )
    (tmp_path / "parent.yaml").write_text(
        "name: parent\nphases:\n  - id: sub\n    agent: workflow\n"
        "    with: {path: child.yaml, inputs: {token: '{{ secrets.API_TOKEN }}'}}\n",
        encoding="utf-8",
    )
    (tmp_path / "child.yaml").write_text(
        "name: child\ninputs:\n  token: {type: string, required: true}\nphases:\n"
        "  - id: call\n    agent: shell\n"
        f"    with: {{command: '{fails}', env: {{T: '{{{{ inputs.token }}}}'}}}}\n",
        encoding="utf-8",
    )
    for workflow, failed in (
        ("direct.yaml", {"call shell", "attempt 1", "phase call", "run direct"}),
        ("parent.yaml", {"call shell", "run child", "call workflow", "phase sub", "run parent"}),
    ):
        receiver = HTTPServer({("POST", "/v1/traces"): Reply(200, body=b"")})
        with receiver:
            env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "API_TOKEN": secret}
            result = orch("run", workflow, "--events", "jsonl", cwd=tmp_path, env=env)
        assert result.returncode == 1, result.stderr
        assert secret not in result.stdout + result.stderr
        # nowhere in what was exported: names, attributes, statuses, span events
        assert receiver.requests
        assert not [r for r in receiver.requests if secret.encode() in r.body]
        request = ExportTraceServiceRequest()
        messages = {}
        for rec in receiver.requests:
            request.ParseFromString(rec.body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        messages.setdefault(span.name, []).append(span.status.message)
        # the spans of the failure say what failed, with the token masked
        for name in failed:
            assert any("auth failed for ***" in m for m in messages[name]), (name, messages)
