"""`orch serve` over real HTTP: runs it starts are ordinary runs, the API, its errors, security."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestrator.engine.saga import INTERRUPTED, NOT_RUN
from tests.service.serving import RELEASE, Serve, orch, wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

GREET = """name: greet
inputs:
  who: {type: string, required: true}
  times: {type: integer, default: 1}
triggers:
  - webhook: true
phases:
  - id: hello
    agent: shell
    with: {command: "echo hello {{ inputs.who }} x{{ inputs.times }}"}
  - id: shout
    agent: echo
    depends_on: [hello]
    with: {text: "{{ phases.hello.output | upper }}"}
outputs:
  text: "{{ phases.shout.output }}"
"""

# A phase that runs until the test creates the file `go` beside the workflow file.
GATED = """name: gated
triggers:
  - webhook: true
phases:
  - id: wait
    agent: shell
    with: {command: "while [ ! -f go ]; do sleep 0.05; done; echo opened"}
  - id: after
    agent: echo
    depends_on: [wait]
    with: {text: "{{ phases.wait.output }} then after"}
outputs:
  result: "{{ phases.after.output }}"
"""

NO_HOOK = """name: nohook
phases:
  - {id: a, agent: echo, with: {text: hi}}
"""


def phase_running(srv: Serve, run_id: str, phase: str = "wait") -> None:
    def check():
        run = srv.http.get(f"/api/runs/{run_id}").json()
        return any(p["id"] == phase and p["state"] == "running" for p in run.get("phases", []))

    wait_for(check, f"phase {phase} of {run_id} to run")


def test_a_webhook_run_with_inputs_completes_and_shows_in_orch_runs(tmp_path):
    with Serve(tmp_path, {"greet": GREET}) as srv:
        r = srv.http.post(
            "/api/workflows/greet/runs", json={"inputs": {"who": "ada", "times": "3"}}
        )
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        run = srv.run_when(run_id, "completed", "failed")
        assert run["status"] == "completed"
        assert run["outputs"] == {"text": "HELLO ADA X3"}
        assert run["inputs"] == {"who": "ada", "times": 3}  # "3" parsed as --input parses it
        assert [p["state"] for p in run["phases"]] == ["completed", "completed"]
        assert run["trigger"]["kind"] == "webhook"
        listed = orch("runs", state_dir=srv.state_dir)
        assert run_id in listed.stdout and "completed" in listed.stdout
        status = orch("status", run_id, state_dir=srv.state_dir)
        assert status.returncode == 0 and "shout" in status.stdout + status.stderr
        logs = orch("logs", run_id, state_dir=srv.state_dir)
        assert "workflow_completed" in logs.stdout + logs.stderr or "completed" in logs.stdout


def test_a_bad_sequence_number_or_limit_is_a_400_naming_it(tmp_path):
    # "²" passes str.isdigit but is no number; 10**23 is past SQLite's integers: both were 500s
    with Serve(tmp_path, {"greet": GREET}) as srv:
        run_id = srv.http.post("/api/workflows/greet/runs", json={"inputs": {"who": "x"}})
        run_id = run_id.json()["id"]
        srv.run_when(run_id, "completed")
        for bad in ("\u00b2", "1\u00b2", str(10**23), str(2**63), "-1", "x", ""):
            for route in ("logs", "events", "events/stream"):
                r = srv.http.get(f"/api/runs/{run_id}/{route}", params={"after": bad})
                assert r.status_code == 400, (route, bad, r.text)
                assert r.json()["error"].startswith("after must be a whole number from 0 to")
            r = srv.http.get("/api/runs", params={"limit": bad})
            assert r.status_code == 400 and r.json()["error"].startswith("limit must be"), bad
        for bad in ("\u00b2".encode("latin-1"), str(10**23).encode(), b"x"):
            r = srv.http.get(f"/api/runs/{run_id}/events/stream", headers={"Last-Event-ID": bad})
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"].startswith("Last-Event-ID must be a whole number")
        # the largest sequence number SQLite holds is asked as any other: nothing after it
        for route in ("logs", "events"):
            r = srv.http.get(f"/api/runs/{run_id}/{route}", params={"after": str(2**63 - 1)})
            assert r.status_code == 200 and r.json() == [], r.text
        events = srv.http.get(f"/api/runs/{run_id}/events", params={"after": "0"}).json()
        assert events[0]["event"] == "workflow_started"


# A phase over 1,010 items: one phase_stream event each, a log longer than a page (1,000)
MANY = """name: many
triggers:
  - webhook: true
phases:
  - id: each
    agent: echo
    foreach: "{{ range(1010) | list }}"
    with: {text: "item {{ item }}"}
"""


def test_a_long_log_comes_in_pages_that_add_up_to_orch_logs(tmp_path):
    with Serve(tmp_path, {"many": MANY}) as srv:
        run_id = srv.http.post("/api/workflows/many/runs", json={}).json()["id"]
        srv.run_when(run_id, "completed")
        printed = orch("logs", run_id, state_dir=srv.state_dir).stdout
        assert len(printed.splitlines()) > 1010

        def pages(**params: str) -> list[list[dict]]:
            got, after = [], 0
            while True:
                r = srv.http.get(f"/api/runs/{run_id}/logs", params={**params, "after": after})
                assert r.status_code == 200, r.text
                got.append(r.json())
                size = int(params.get("limit", 1000))
                if len(got[-1]) < size:
                    return got
                after = got[-1][-1]["seq"]

        default = pages()
        assert [len(p) for p in default[:1]] == [1000] and len(default) == 2
        small = pages(limit="300")
        assert [len(p) for p in small[:-1]] == [300] * 3
        for got in (default, small):
            assert "".join(e["line"] + "\n" for page in got for e in page) == printed
        one = srv.http.get(f"/api/runs/{run_id}/logs", params={"phase": "each", "limit": 2})
        assert [e["event"] for e in one.json()] == ["phase_started", "phase_stream"]
        for bad in ("0", "10001", "\u00b2"):
            r = srv.http.get(f"/api/runs/{run_id}/logs", params={"limit": bad})
            assert r.status_code == 400 and r.json()["error"].startswith("limit must be"), bad


# 2,500 items: a run of more than two pages (1,000 events) of events
LONG = MANY.replace("name: many", "name: long").replace("range(1010)", "range(2500)")


def _all_pages(srv: Serve, path: str, **params: str) -> list[list[dict]]:
    """Every page of a paged answer, following its Link rel="next" header."""
    pages, url = [], path
    while True:
        r = srv.http.get(url, params=params if url == path else None)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        if "next" not in r.links:
            return pages
        url = r.links["next"]["url"]


def test_a_long_runs_events_come_in_pages_each_naming_the_next(tmp_path):
    with Serve(tmp_path, {"long": LONG}) as srv:
        run_id = srv.http.post("/api/workflows/long/runs", json={}).json()["id"]
        srv.run_when(run_id, "completed")
        logged = orch("logs", run_id, "--json", state_dir=srv.state_dir).stdout.splitlines()
        stored = [json.loads(line) for line in logged]
        assert len(stored) > 2000

        def kinds(pages: list[list[dict]]) -> list[tuple[str, str | None]]:
            return [(e["event"], e.get("phase")) for page in pages for e in page]

        default = _all_pages(srv, f"/api/runs/{run_id}/events")
        assert [len(p) for p in default[:-1]] == [1000] * (len(default) - 1)
        assert 0 < len(default[-1]) <= 1000
        small = _all_pages(srv, f"/api/runs/{run_id}/events", limit="700")
        assert [len(p) for p in small[:-1]] == [700] * (len(small) - 1)
        later = _all_pages(srv, f"/api/runs/{run_id}/events", after="1500", limit="700")
        for pages in (default, small):  # every event once, in order, as orch logs has them
            seqs = [e["seq"] for page in pages for e in page]
            assert seqs == sorted(set(seqs))
            assert kinds(pages) == [(e["event"], e.get("phase")) for e in stored]
        assert [e["seq"] for page in later for e in page][0] > 1500
        # the last page names no next one, even when it is full
        exact = srv.http.get(
            f"/api/runs/{run_id}/events",
            params={"after": default[-2][-1]["seq"], "limit": str(len(default[-1]))},
        )
        assert exact.json() == default[-1] and "next" not in exact.links
        first = srv.http.get(f"/api/runs/{run_id}/events", params={"limit": "10"})
        following = httpx.URL(first.links["next"]["url"])
        assert following.path == f"/api/runs/{run_id}/events"
        assert dict(following.params) == {"after": str(first.json()[-1]["seq"]), "limit": "10"}
        for bad in ("0", "10001", "\u00b2"):
            r = srv.http.get(f"/api/runs/{run_id}/events", params={"limit": bad})
            assert r.status_code == 400 and r.json()["error"].startswith("limit must be"), bad
        # the log's pages name their next page too (a full page no longer has to be guessed)
        log = _all_pages(srv, f"/api/runs/{run_id}/logs", limit="900")
        assert [e["seq"] for page in log for e in page] == [e["seq"] for p in default for e in p]


# Counts the rows of every read of a run's events in the real `orch serve` process
# (a sitecustomize module on its PYTHONPATH), one line per read in ORCH_TEST_READS.
_READS = """\
import os

from orchestrator.state.sqlite import SqliteStore

_events = SqliteStore.events
_last = SqliteStore.last_event


def _counted(self, run_id, **kwargs):
    rows = _events(self, run_id, **kwargs)
    with open(os.environ["ORCH_TEST_READS"], "a") as out:
        out.write(f"{len(rows)}\\n")
    return rows


def _counted_last(self, run_id):
    row = _last(self, run_id)
    with open(os.environ["ORCH_TEST_READS"], "a") as out:
        out.write(f"{int(row is not None)}\\n")
    return row


SqliteStore.events = _counted
SqliteStore.last_event = _counted_last
"""


def _spying(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of a process whose store reads are counted (``_READS``) into the
    file returned."""
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(_READS)
    reads = tmp_path / "reads.txt"
    path = os.pathsep.join(p for p in (str(spy), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "ORCH_TEST_READS": str(reads)}, reads


def test_an_event_stream_reads_a_long_backlog_a_page_at_a_time(tmp_path):
    env, reads = _spying(tmp_path)
    with Serve(tmp_path, {"long": LONG}, env=env) as srv:
        run_id = srv.http.post("/api/workflows/long/runs", json={}).json()["id"]
        srv.run_when(run_id, "completed")
        assert reads.read_text()  # the spy counts the service's reads
        reads.write_text("")  # from here: the stream's reads only
        with srv.http.stream("GET", f"/api/runs/{run_id}/events/stream") as stream:
            text = "".join(stream.iter_text())
        counted = [int(n) for n in reads.read_text().split()]
        logged = orch("logs", run_id, "--json", state_dir=srv.state_dir).stdout.splitlines()
    seqs = [int(line[len("id: ") :]) for line in text.splitlines() if line.startswith("id: ")]
    sent = [json.loads(line[len("data: ") :]) for line in text.splitlines() if '"seq"' in line]
    stored = [json.loads(line) for line in logged]
    assert len(stored) > 2000
    assert seqs == sorted(set(seqs))  # the whole backlog, in order, once each
    assert [(e["event"], e.get("phase")) for e in sent] == [
        (e["event"], e.get("phase")) for e in stored
    ]
    assert text.rstrip().endswith("event: end\ndata: {}")
    assert sum(counted) == len(stored)
    assert max(counted) <= 1000  # never read at once: a page (1000) at a time
    assert len(counted) >= 3


def test_the_run_page_logs_and_status_read_a_long_runs_events_a_page_at_a_time(tmp_path):
    # GET /api/runs/ID (which the run page calls again after streamed events), `orch logs`
    # and the Python API's follow() behind it, and `orch status` of a cancelled run read
    # every event of the run at once: a long run's thousands in one read
    env, reads = _spying(tmp_path)

    def counted() -> list[int]:
        found = [int(n) for n in reads.read_text().split()]
        reads.write_text("")
        return found

    def spied(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env, "ORCH_STATE_DIR": str(srv.state_dir), "NO_COLOR": "1"},
            timeout=120,
        )

    with Serve(tmp_path, {"long": LONG, "gated": GATED}, env=env) as srv:
        run_id = srv.http.post("/api/workflows/long/runs", json={}).json()["id"]
        srv.run_when(run_id, "completed")
        gated = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
        srv.run_when(gated, "running")
        assert orch("cancel", gated, state_dir=srv.state_dir).returncode == 0  # as SIGTERM
        srv.run_when(gated, "cancelled")
        counted()
        page = srv.http.get(f"/api/runs/{run_id}").json()
        by_page = counted()
        srv_events = _all_pages(srv, f"/api/runs/{run_id}/events")[-1]
        counted()
    logged = spied("logs", run_id, "--json")
    by_logs = counted()
    waited = spied("wait", gated)  # its exit code: 143, cancelled by SIGTERM
    by_status = counted()
    stored = [json.loads(line) for line in logged.stdout.splitlines()]
    assert len(stored) > 2000
    # the page as it was: its last event, its trigger, a bar for the phase
    last = srv_events[-1]["seq"]
    assert page["status"] == "completed" and page["last_seq"] == last
    assert page["trigger"] == stored[0]["data"]["trigger"]
    assert [b["phase"] for b in page["attempts"]] == [p["id"] for p in page["phases"]]
    for reads_of in (by_page, by_logs):
        assert sum(reads_of) >= len(stored)  # every event read ...
        assert max(reads_of) <= 1000 and len(reads_of) >= 3  # ... a page (1000) at a time
    assert waited.returncode == 143, waited.stderr
    assert by_status == [1]  # the run's last event: who cancelled it


def test_bad_inputs_are_422_with_every_problem_located(tmp_path):
    with Serve(tmp_path, {"greet": GREET}) as srv:
        r = srv.http.post(
            "/api/workflows/greet/runs", json={"inputs": {"whom": "x", "times": "many"}}
        )
        assert r.status_code == 422
        body = r.json()
        problems = {p["location"]: p for p in body["problems"]}
        assert problems["inputs.whom"]["message"] == "unknown input 'whom'"
        assert problems["inputs.whom"]["hint"] == "did you mean 'who'?"
        assert "must be an integer" in problems["inputs.times"]["message"]
        assert "missing required input 'who'" in problems["inputs.who"]["message"]
        assert srv.runs() == []  # nothing started
        # not JSON, not an object, unknown fields: 400 with a message
        assert srv.http.post("/api/workflows/greet/runs", content=b"{nope").status_code == 400
        r = srv.http.post("/api/workflows/greet/runs", json={"input": {}})
        assert r.status_code == 400 and "unknown field" in r.json()["error"]


def test_a_workflow_without_a_webhook_trigger_is_not_started_by_the_webhook(tmp_path):
    with Serve(tmp_path, {"nohook": NO_HOOK}) as srv:
        r = srv.http.post("/api/workflows/nohook/runs", json={})
        assert r.status_code == 403
        assert "has no webhook trigger" in r.json()["error"]
        # the authenticated API may start it
        r = srv.http.post("/api/runs", json={"workflow": "nohook"})
        assert r.status_code == 202
        assert srv.run_when(r.json()["id"], "completed")["trigger"]["kind"] == "api"


def test_workflow_names_never_reach_outside_the_folder(tmp_path):
    (tmp_path / "secret.yaml").write_text(NO_HOOK.replace("nohook", "secret"))
    with Serve(tmp_path, {"greet": GREET}) as srv:
        (srv.folder / "link.yaml").symlink_to(tmp_path / "secret.yaml")
        for name in (
            "..%2Fsecret",
            "..",
            "%2E%2E%2Fsecret",
            "a..b",
            "..%5Csecret",
            "link",
            "greet%00",
            ".hidden",
            "x%2Fy",
        ):
            for method, path in (
                ("GET", f"/api/workflows/{name}"),
                ("POST", f"/api/workflows/{name}/runs"),
                ("POST", f"/api/workflows/{name}/validate"),
            ):
                r = srv.http.request(method, path, json={})
                assert r.status_code in (400, 404), (name, method, r.status_code, r.text)
                assert "error" in r.json()
        names = [w["name"] for w in srv.http.get("/api/workflows").json()]
        assert names == ["greet"]  # the symlink leading out of the folder is not served
        assert srv.runs() == []


def test_sse_delivers_a_runs_events_live(tmp_path):
    with Serve(tmp_path, {"gated": GATED}) as srv:
        run_id = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
        seen: list[dict] = []
        with srv.http.stream("GET", f"/api/runs/{run_id}/events/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: ") and kind != "end":
                    event = json.loads(line[len("data: ") :])
                    seen.append(event)
                    if event["event"] == "phase_started" and event["phase"] == "wait":
                        # the phase is still running: this event came live, then we open the gate
                        assert srv.http.get(f"/api/runs/{run_id}").json()["status"] == "running"
                        (srv.folder / "go").write_text("")
                elif kind == "end":
                    break
        kinds = [e["event"] for e in seen]
        assert kinds[0] == "workflow_started"
        assert kinds.index("phase_started") < kinds.index("phase_completed")
        assert kinds[-1] == "workflow_completed"
        assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
        # Last-Event-ID resumes after what the client saw
        last = seen[-2]["seq"]
        with srv.http.stream(
            "GET", f"/api/runs/{run_id}/events/stream", headers={"Last-Event-ID": str(last)}
        ) as stream:
            text = "".join(stream.iter_text())
        assert text.count('data: {"seq"') == 1 and "workflow_completed" in text


def test_sigterm_stops_the_service_while_a_client_follows_a_running_runs_events(tmp_path):
    # from Python 3.12 the HTTP server waits for every open connection before it stops: an
    # event stream following a run that only ends after the server stopped kept it up for ever
    srv = Serve(tmp_path, {"gated": GATED}).start()
    run_id = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
    with (
        httpx.Client(base_url=srv.url, timeout=30) as follower,
        follower.stream("GET", f"/api/runs/{run_id}/events/stream") as stream,
    ):
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("data: ") and '"phase_started"' in line and '"wait"' in line:
                break  # the run waits for its gate, the stream is live
        assert srv.stop(signal.SIGTERM) == 143
        rest = list(lines)  # the stream ended when the service stopped
    assert "event: end" not in rest
    assert "SIGTERM: stopping" in srv.log() and "Traceback" not in srv.log()
    assert orch("status", run_id, state_dir=srv.state_dir).stdout.count("cancelled") >= 1


SAGA = """name: saga
triggers:
  - webhook: true
phases:
  - id: book
    agent: echo
    with: {{text: booked}}
    compensate: {{agent: shell, with: {{command: "echo unbook >> '{ledger}'"}}}}
  - id: pay
    agent: echo
    depends_on: [book]
    with: {{text: paid}}
    compensate:
      agent: shell
      with:
        command: "echo refund >> '{ledger}'; while [ ! -f '{quick}' ]; do sleep 0.05; done"
        kill_grace: 3
  - id: boom
    agent: shell
    depends_on: [pay]
    with: {{command: "exit 3"}}
"""


def test_a_second_sigterm_stops_a_compensating_run_which_still_records_its_end(tmp_path):
    # the second signal used to exit at once (sys.exit): the run it left in the middle of its
    # compensation had no end in the store; it now stops the runs as a second Ctrl-C stops
    # `orch run` (the same RunHandle.cancel(force=True)), and each records its end
    ledger, quick = tmp_path / "ledger", tmp_path / "quick"
    srv = Serve(tmp_path, {"saga": SAGA.format(ledger=ledger, quick=quick)}).start()
    try:
        run_id = srv.http.post("/api/workflows/saga/runs", json={}).json()["id"]
        wait_for(lambda: ledger.exists() and "refund" in ledger.read_text(), "compensating")
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)  # the service stops: the run goes on compensating
        wait_for(lambda: "SIGTERM: stopping" in srv.log(), "the first signal taken")
        srv.proc.send_signal(signal.SIGTERM)  # again: stop the run now
        code = srv.proc.wait(timeout=60)
    finally:
        quick.touch()  # a compensation left running (it should not be) ends
        srv.stop()
    assert code == 143, srv.log()
    listed = orch("logs", run_id, "--json", state_dir=srv.state_dir)
    events = [json.loads(line) for line in listed.stdout.splitlines()]
    ended = events[-1]
    assert ended["event"] in ("workflow_failed", "workflow_cancelled"), ended
    compensated = {e["phase"]: e["data"] for e in events if e["event"] == "phase_compensated"}
    # 'pay': its command was stopped; 'book', not started after the second signal, is
    # pending (nothing recorded): `orch resume` runs it
    assert compensated == {"pay": {"ok": False, "error": INTERRUPTED}}
    assert f"compensation of 'book' {NOT_RUN}" in ended["data"]["error"]
    assert ledger.read_text().splitlines() == ["refund"]
    status = json.loads(orch("status", run_id, "--json", state_dir=srv.state_dir).stdout)
    assert {p["id"]: p["compensated"] for p in status["phases"]}["book"] is None
    assert status["status"] == ended["event"].removeprefix("workflow_")  # ended, not interrupted
    assert "SIGTERM again: stopping the runs now" in srv.log()
    assert "Traceback" not in srv.log() and "exiting now" not in srv.log()


def test_cancel_and_resume_through_the_api(tmp_path):
    with Serve(tmp_path, {"gated": GATED}) as srv:
        run_id = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
        phase_running(srv, run_id)
        r = srv.http.post(f"/api/runs/{run_id}/cancel")
        assert r.status_code == 202, r.text
        cancelled = srv.run_when(run_id, "cancelled")
        assert cancelled["phases"][0]["state"] == "cancelled"
        assert srv.http.post(f"/api/runs/{run_id}/cancel").status_code == 409
        # the service stopped it, as `orch cancel` does: recorded as SIGTERM, `orch wait` 143
        assert cancelled["cancelled_by"] == "SIGTERM"
        ended = orch("logs", run_id, "--json", state_dir=srv.state_dir).stdout.splitlines()[-1]
        assert json.loads(ended)["data"]["cancelled_by"] == "SIGTERM"
        status = json.loads(orch("status", run_id, "--json", state_dir=srv.state_dir).stdout)
        assert status["cancelled_by"] == "SIGTERM"
        assert orch("wait", run_id, state_dir=srv.state_dir).returncode == 143
        (srv.folder / "go").write_text("")
        r = srv.http.post(f"/api/runs/{run_id}/resume")
        assert r.status_code == 202, r.text
        done = srv.run_when(run_id, "completed")
        assert done["outputs"] == {"result": "opened then after"}
        r = srv.http.post(f"/api/runs/{run_id}/resume")
        assert r.status_code == 409 and "nothing to resume" in r.json()["error"]
        assert srv.http.get("/api/runs/nope").status_code == 404


def test_max_runs_queues_the_rest_in_priority_order(tmp_path):
    with Serve(tmp_path, {"gated": GATED, "greet": GREET}, args=("--max-runs", "1")) as srv:
        first = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
        srv.run_when(first, "running")
        low = srv.http.post(
            "/api/runs", json={"workflow": "greet", "inputs": {"who": "low"}, "priority": "low"}
        ).json()["id"]
        high = srv.http.post(
            "/api/runs", json={"workflow": "greet", "inputs": {"who": "high"}, "priority": "high"}
        ).json()["id"]
        assert srv.http.get(f"/api/runs/{low}").json()["status"] == "queued"
        assert {r["id"] for r in srv.runs(status="queued")} == {low, high}
        metrics = srv.http.get("/metrics").text
        assert "orch_queue_length 2" in metrics
        (srv.folder / "go").write_text("")
        a = srv.run_when(high, "completed")
        b = srv.run_when(low, "completed")
        assert a["started"] < b["started"]  # high before low, though it came later


def test_api_documents_itself_and_errors_are_json(tmp_path):
    with Serve(tmp_path, {"greet": GREET}) as srv:
        doc = srv.http.get("/api/openapi.json").json()
        assert doc["openapi"].startswith("3.")
        for path in ("/api/workflows/{name}/runs", "/api/runs/{id}/events/stream", "/metrics"):
            assert path in doc["paths"]
        r = srv.http.get("/api/nothing-here")
        assert r.status_code == 404 and r.json()["error"].startswith("nothing at")
        r = srv.http.delete("/api/runs")
        assert r.status_code == 405 and "not allowed" in r.json()["error"]
        assert srv.http.get("/api/runs", params={"limit": "x"}).status_code == 400
        health = srv.http.get("/healthz").json()
        assert health["status"] == "ok" and health["workflows"] == 1
        wf = srv.http.get("/api/workflows/greet").json()
        assert wf["inputs"]["who"] == {"type": "string", "required": True}
        assert [p["id"] for p in wf["phases"]] == ["hello", "shout"]
        v = srv.http.post("/api/workflows/greet/validate").json()
        assert v["valid"] is True


def test_metrics_are_openmetrics_text(tmp_path):
    with Serve(tmp_path, {"greet": GREET}) as srv:
        run_id = srv.http.post("/api/workflows/greet/runs", json={"inputs": {"who": "m"}}).json()[
            "id"
        ]
        srv.run_when(run_id, "completed")
        r = srv.http.get("/metrics")
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        text = r.text
        assert text.endswith("# EOF\n")
        assert 'orch_runs{workflow="greet",status="completed"} 1' in text
        assert 'orch_phase_duration_seconds_count{workflow="greet",phase="hello"} 1' in text
        assert 'orch_phase_retries_total{workflow="greet",phase="hello"} 0' in text
        assert "orch_queue_length 0" in text
        stats = srv.http.get("/api/stats").json()
        assert {"workflow": "greet", "status": "completed", "count": 1} in stats["runs"]


def test_a_non_loopback_bind_without_a_token_refuses_to_start(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    env = {"ORCH_API_TOKEN": ""}
    import os
    import subprocess

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--workflows",
            str(folder),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in out.stderr
    assert "ORCH_API_TOKEN" in out.stderr and "Traceback" not in out.stderr


ALL_ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/workflows"),
    ("GET", "/api/workflows/greet"),
    ("POST", "/api/workflows/greet/validate"),
    ("POST", "/api/workflows/greet/runs"),
    ("GET", "/api/runs"),
    ("POST", "/api/runs"),
    ("GET", "/api/runs/RUN"),
    ("GET", "/api/runs/RUN/outputs"),
    ("GET", "/api/runs/RUN/logs"),
    ("GET", "/api/runs/RUN/events"),
    ("GET", "/api/runs/RUN/events/stream"),
    ("POST", "/api/runs/RUN/cancel"),
    ("POST", "/api/runs/RUN/resume"),
    ("POST", "/api/runs/RUN/phases/hello/approve"),
    ("GET", "/api/stats"),
    ("GET", "/"),
    ("GET", "/runs/RUN"),
    ("GET", "/workflows"),
    ("GET", "/static/app.js"),
]


def test_with_a_token_every_route_refuses_a_missing_or_wrong_token(tmp_path):
    token = "s3cret-token-of-some-length"
    with Serve(tmp_path, {"greet": GREET}, env={"ORCH_API_TOKEN": token}) as srv:
        good = {"Authorization": f"Bearer {token}"}
        run_id = srv.http.post(
            "/api/workflows/greet/runs", json={"inputs": {"who": "t"}}, headers=good
        ).json()["id"]
        srv.http.headers.update(good)
        srv.run_when(run_id, "completed")
        srv.http.headers.pop("Authorization")
        for method, path in ALL_ROUTES:
            path = path.replace("RUN", run_id)
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": token},
                {"Authorization": f"Bearer {token}x"},
            ):
                r = srv.http.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert "token" in r.json()["error"]
        for method, path in ALL_ROUTES:
            r = srv.http.request(method, path.replace("RUN", run_id), headers=good, json={})
            assert r.status_code != 401, (method, path)
        # a browser is sent to the login page, which sets the session cookie
        r = srv.http.get("/", headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert srv.http.get("/login").status_code == 200
        r = srv.http.post(
            "/login",
            content=b"token=wrong",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert "not right" in r.text and "orch_session" not in r.cookies
        r = srv.http.post(
            "/login",
            content=f"token={token}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 303 and token not in r.headers["set-cookie"]
        session = r.cookies["orch_session"]
        cookies = {"orch_session": session, "orch_csrf": "abc"}
        with httpx.Client(base_url=srv.url, cookies=cookies) as browser:
            assert browser.get("/api/runs").status_code == 200
            # a state change by cookie needs the double-submit header
            r = browser.post(f"/api/runs/{run_id}/resume")
            assert r.status_code == 403 and "X-Orch-CSRF" in r.json()["error"]
            r = browser.post(f"/api/runs/{run_id}/resume", headers={"X-Orch-CSRF": "abc"})
            assert r.status_code == 409  # past the checks: a completed run is not resumed


def test_cross_site_requests_big_bodies_and_webhook_floods_are_refused(tmp_path):
    with Serve(tmp_path, {"greet": GREET}) as srv:
        r = srv.http.post(
            "/api/workflows/greet/runs",
            json={"inputs": {"who": "x"}},
            headers={"Origin": "http://evil.example"},
        )
        assert r.status_code == 403 and "cross-site" in r.json()["error"]
        r = srv.http.get("/api/runs", headers={"Host": "evil.example"})
        assert r.status_code == 403  # DNS rebinding onto the loopback service
        r = srv.http.post("/api/workflows/greet/runs", content=b"x" * (2 << 20))
        assert r.status_code == 413
        assert srv.runs() == []
        codes = [
            srv.http.post("/api/workflows/greet/runs", json={"inputs": {"who": str(i)}}).status_code
            for i in range(14)
        ]
        assert codes[:10] == [202] * 10
        assert 429 in codes[10:]
        r = srv.http.post("/api/workflows/greet/runs", json={"inputs": {"who": "y"}})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_sigterm_cancels_running_runs_and_a_crash_is_reported_at_the_next_start(tmp_path):
    srv = Serve(tmp_path, {"gated": GATED}).start()
    run_id = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
    srv.run_when(run_id, "running")
    assert srv.stop(signal.SIGTERM) == 143
    assert "SIGTERM: stopping" in srv.log() and "Traceback" not in srv.log()
    assert orch("status", run_id, state_dir=srv.state_dir).stdout.count("cancelled") >= 1
    status = json.loads(orch("status", run_id, "--json", state_dir=srv.state_dir).stdout)
    assert status["cancelled_by"] == "SIGTERM"  # what stopped the service stopped its runs
    srv.start()
    second = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
    phase_running(srv, second)
    srv.stop(signal.SIGKILL)  # a crash
    with srv:
        wait_for(lambda: "was interrupted" in srv.log(), "the interrupted-run line")
        assert f"run {second} (gated) was interrupted by a crash" in srv.log()
        (srv.folder / "go").write_text("")
        assert srv.http.post(f"/api/runs/{second}/resume").status_code == 202
        assert srv.run_when(second, "completed")["outputs"] == {"result": "opened then after"}


def test_ctrl_c_cancels_the_services_runs_as_ctrl_c_cancels_orch_run(tmp_path):
    srv = Serve(tmp_path, {"gated": GATED}).start()
    run_id = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
    phase_running(srv, run_id)
    assert srv.stop(signal.SIGINT) == 130
    status = json.loads(orch("status", run_id, "--json", state_dir=srv.state_dir).stdout)
    assert (status["status"], status["cancelled_by"]) == ("cancelled", "SIGINT")
    assert orch("wait", run_id, state_dir=srv.state_dir).returncode == 130  # as `orch serve`


def test_a_sub_workflows_approval_is_decided_through_the_api_at_its_address(tmp_path):
    outer = (
        "name: outer\ntriggers:\n  - webhook: true\nphases:\n"
        "  - {id: go, agent: workflow, with: {path: release.yaml}}\n"
    )
    with Serve(tmp_path, {"release": RELEASE, "outer": outer}) as srv:
        run_id = srv.http.post("/api/workflows/outer/runs", json={}).json()["id"]
        wait_for(
            lambda: any(
                p["id"] == "go/ship" and p["state"] == "waiting"
                for p in srv.http.get(f"/api/runs/{run_id}").json().get("phases", [])
            ),
            "the sub-run's approval wait",
        )
        # as the UI sends it (encodeURIComponent), and as a person types it
        r = srv.http.post(f"/api/runs/{run_id}/phases/go%2Fship/approve", json={})
        assert r.status_code == 200, r.text
        assert r.json()["message"] == f"phase go/ship of run {run_id} approved"
        assert srv.run_when(run_id, "completed")["status"] == "completed"
        r = srv.http.post(f"/api/runs/{run_id}/phases/go/ship/reject", json={})
        assert r.status_code == 409 and "already approved by orch serve API" in r.json()["error"]


def test_orch_cancel_from_a_shell_cancels_a_service_run_and_the_service_goes_on(tmp_path):
    with Serve(tmp_path, {"gated": GATED, "greet": GREET}) as srv:
        run_id = srv.http.post("/api/workflows/gated/runs", json={}).json()["id"]
        phase_running(srv, run_id)
        out = orch("cancel", run_id, state_dir=srv.state_dir)
        assert out.returncode == 0, out.stderr
        assert f"to cancel run {run_id}" in out.stderr and f"run {run_id} cancelled" in out.stderr
        assert srv.run_when(run_id, "cancelled")["status"] == "cancelled"
        assert srv.proc is not None and srv.proc.poll() is None  # not signalled
        r = srv.http.post("/api/workflows/greet/runs", json={"inputs": {"who": "still"}})
        assert srv.run_when(r.json()["id"], "completed")["status"] == "completed"


def test_approvals_are_decided_through_the_api(tmp_path):
    with Serve(tmp_path, {"release": RELEASE}) as srv:
        first = srv.http.post("/api/workflows/release/runs", json={}).json()["id"]
        wait_for(
            lambda: any(
                p["id"] == "ship" and p["state"] == "waiting"
                for p in srv.http.get(f"/api/runs/{first}").json().get("phases", [])
            ),
            "the approval wait",
        )
        r = srv.http.post(f"/api/runs/{first}/phases/build/approve", json={})
        assert r.status_code == 409 and "not waiting" in r.json()["error"]
        r = srv.http.post(f"/api/runs/{first}/phases/ship/approve", json={"comment": "lgtm"})
        assert r.status_code == 200, r.text
        assert r.json()["message"] == f"phase ship of run {first} approved"
        assert srv.run_when(first, "completed")["outputs"] == {"result": "shipped"}
        r = srv.http.post(f"/api/runs/{first}/phases/ship/reject", json={})
        assert r.status_code == 409 and "already approved by orch serve API" in r.json()["error"]
        second = srv.http.post("/api/workflows/release/runs", json={}).json()["id"]
        wait_for(
            lambda: any(
                p["state"] == "waiting"
                for p in srv.http.get(f"/api/runs/{second}").json().get("phases", [])
            ),
            "the second wait",
        )
        assert srv.http.post(f"/api/runs/{second}/phases/ship/maybe").status_code == 400
        assert srv.http.post(f"/api/runs/{second}/phases/ship/reject").status_code == 200
        assert srv.run_when(second, "failed")["status"] == "failed"


def test_the_api_shows_a_run_as_orch_status_json_does_with_more_keys(tmp_path):
    with Serve(tmp_path, {"greet": GREET}) as srv:
        r = srv.http.post("/api/workflows/greet/runs", json={"inputs": {"who": "ada"}})
        run_id = r.json()["id"]
        api = srv.run_when(run_id, "completed", "failed")
        shown = orch("status", run_id, "--json", state_dir=srv.state_dir)
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
    # one builder: every key of `orch status --json` is in the API's answer, equal
    assert {k: api[k] for k in status if k != "phases"} == {
        k: v for k, v in status.items() if k != "phases"
    }
    phases = zip(api["phases"], status["phases"], strict=True)
    assert [{k: p[k] for k in s} for p, s in phases] == status["phases"]
    assert status["inputs"] == {"who": "ada", "times": 1}
    assert status["counts"] == {"completed": 2}
    assert [p["output"] for p in status["phases"]] == ["hello ada x1", "HELLO ADA X1"]
    assert {"attempts", "graph", "trigger", "last_seq"} <= set(api) - set(status)
    assert all(p["approval"] is None for p in api["phases"])


FAN = """name: fan
triggers:
  - webhook: true
phases:
  - id: fan
    foreach: "{{ ['a', 'b', 'c'] }}"
    max_parallel: 1
    agent: shell
    with: {command: "while [ ! -f go-{{ item }} ]; do sleep 0.05; done; echo {{ item }}"}
"""


def test_the_api_shows_a_running_foreachs_items_done_as_orch_status_does(tmp_path):
    with Serve(tmp_path, {"fan": FAN}) as srv:
        (srv.folder / "go-a").write_text("")
        run_id = srv.http.post("/api/workflows/fan/runs", json={}).json()["id"]

        def items():
            phases = srv.http.get(f"/api/runs/{run_id}").json().get("phases", [])
            return next((p.get("items") for p in phases if p["id"] == "fan"), None)

        wait_for(lambda: items() == {"done": 1, "total": 3}, "1 of 3 items done")
        shown = json.loads(orch("status", run_id, "--json", state_dir=srv.state_dir).stdout)
        assert shown["phases"][0]["items"] == {"done": 1, "total": 3}
        for item in "bc":
            (srv.folder / f"go-{item}").write_text("")
        api = srv.run_when(run_id, "completed", "failed")
    assert api["status"] == "completed" and api["phases"][0]["items"] is None


def test_an_invalid_workflows_error_is_one_line_and_its_hint_is_in_problems(tmp_path):
    """GET /api/workflows: `error` is the first problem's one line (a list cell, a log
    line); what to do is the problem's `hint`, not folded into `error`."""
    broken = "name: broken\nphases:\n  - {id: a, agent: echo, prompt: hi}\n"
    with Serve(tmp_path, {"greet": GREET, "broken": broken}) as srv:
        listed = {w["name"]: w for w in srv.http.get("/api/workflows").json()}
        entry = listed["broken"]
        assert entry["valid"] is False
        assert "\n" not in entry["error"]
        assert entry["error"].endswith("unknown key 'prompt' in phase 'a'")
        first = next(p for p in entry["problems"] if p["severity"] == "error")
        assert first["hint"].startswith("allowed keys: id, name")
        assert "hint" not in entry["error"]
