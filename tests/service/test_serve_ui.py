"""The web UI of `orch serve` in a real headless chromium (tests/browser.py): runs list, a run's
graph and Gantt timeline, live states without a reload, the cancel button, workflows, login.

Set ORCH_SCREENSHOTS=DIR to keep screenshots of the pages the tests see.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.service.serving import RELEASE, Serve, orch, wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PIPELINE = """name: pipeline
description: Fetch, check and publish a report
triggers:
  - webhook: true
schedule:
  - cron: "0 6 * * mon-fri"
    timezone: Europe/Paris
phases:
  - id: fetch
    agent: shell
    with: {command: "echo fetched 3 accounts", stream: true}
  - id: flaky
    agent: fail
    depends_on: [fetch]
    retries: {attempts: 2, delay: 0.05}
    with: {times: 1}
  - id: score
    agent: echo
    depends_on: [fetch]
    with: {text: "score 0.7"}
  - id: gate
    agent: shell
    depends_on: [flaky, score]
    with: {command: "while [ ! -f go ]; do sleep 0.05; done; echo opened"}
  - id: publish
    agent: echo
    depends_on: [gate]
    with: {text: "published"}
outputs:
  report: "{{ phases.publish.output }}"
"""


def shot(page, name: str) -> None:
    folder = os.environ.get("ORCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def wait_state(page, phase: str, state: str) -> None:
    """Wait (no eval: the page's CSP forbids it) until the graph shows the phase in ``state``."""
    page.locator(f"#graph g.node[data-phase='{phase}'][data-state='{state}']").wait_for()


def start(srv: Serve) -> str:
    r = srv.http.post("/api/workflows/pipeline/runs", json={})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def node_state(page, phase: str) -> str | None:
    return page.get_attribute(f"#graph g.node[data-phase='{phase}']", "data-state")


def test_runs_page_lists_a_finished_run_and_its_page_shows_graph_and_timeline(
    tmp_path, browser_page
):
    page = browser_page
    with Serve(tmp_path, {"pipeline": PIPELINE}) as srv:
        (srv.folder / "go").write_text("")
        run_id = start(srv)
        srv.run_when(run_id, "completed")
        page.goto(srv.url + "/")
        row = page.locator(f"tr[data-run='{run_id}']")
        row.wait_for()
        assert row.get_attribute("data-status") == "completed"
        assert "pipeline" in row.inner_text()
        row.locator("a").click()
        page.wait_for_url(f"**/runs/{run_id}")
        page.locator("#graph g.node").first.wait_for()
        nodes = page.locator("#graph g.node")
        assert nodes.count() == 5
        assert {node_state(page, p) for p in ("fetch", "flaky", "score", "gate", "publish")} == {
            "completed"
        }
        assert page.locator("#graph path.edge").count() == 5
        # the Gantt timeline: one bar per attempt, the flaky phase twice (a failed try, the
        # wait before the retry, then ok)
        assert page.locator("#gantt rect.bar.attempt").count() == 6
        flaky = page.locator("#gantt rect.bar[data-phase='flaky']")
        assert [flaky.nth(i).get_attribute("class") for i in range(3)] == [
            "bar attempt state-failed",
            "bar wait state-waiting",
            "bar attempt state-completed",
        ]
        assert page.text_content("#run-status") == "completed"
        assert '"report": "published"' in page.text_content("#outputs")
        assert page.locator("#phases-body tr[data-phase='flaky'] td").nth(2).inner_text() == "2"
        shot(page, "run-finished")
        # filters
        page.goto(srv.url + "/?status=failed")
        page.locator("#runs-body", has_text="no runs yet").wait_for()
        assert page.locator(f"tr[data-run='{run_id}']").count() == 0
        page.goto(srv.url + "/?workflow=pipeline&status=completed")
        page.locator(f"tr[data-run='{run_id}']").wait_for()


def test_a_live_runs_states_change_without_a_reload(tmp_path, browser_page):
    page = browser_page
    with Serve(tmp_path, {"pipeline": PIPELINE}) as srv:
        run_id = start(srv)
        page.goto(f"{srv.url}/runs/{run_id}")
        wait_state(page, "gate", "running")
        loaded_at = page.evaluate("window.orchLoadedAt")
        assert node_state(page, "publish") == "pending"
        assert page.text_content("#run-status") == "running"
        shot(page, "run-live")
        (srv.folder / "go").write_text("")  # the gate opens: the run goes on
        wait_state(page, "publish", "completed")
        page.locator("body[data-status='completed']").wait_for()
        assert node_state(page, "gate") == "completed"
        assert page.evaluate("window.orchLoadedAt") == loaded_at  # same page: no reload
        assert page.locator("#gantt rect.bar.attempt[data-phase='publish']").count() == 1


def test_the_cancel_button_cancels_a_running_run(tmp_path, browser_page):
    page = browser_page
    with Serve(tmp_path, {"pipeline": PIPELINE}) as srv:
        run_id = start(srv)
        page.goto(f"{srv.url}/runs/{run_id}")
        wait_state(page, "gate", "running")
        page.click("#btn-cancel")
        page.locator("body[data-status='cancelled']").wait_for()
        assert node_state(page, "gate") == "cancelled"
        assert page.is_visible("#btn-resume") and not page.is_visible("#btn-cancel")
        assert "cancelled" in orch("status", run_id, state_dir=srv.state_dir).stdout
        # resume from the page: the gate is open now, the run completes under the same id
        (srv.folder / "go").write_text("")
        page.click("#btn-resume")
        page.locator("body[data-status='completed']").wait_for(timeout=30_000)
        assert node_state(page, "publish") == "completed"


def test_workflows_page_shows_schedules_and_next_fire_times(tmp_path, browser_page):
    page = browser_page
    with Serve(tmp_path, {"pipeline": PIPELINE}) as srv:
        page.goto(srv.url + "/workflows")
        card = page.locator("article.card[data-workflow='pipeline']")
        card.wait_for()
        text = card.inner_text()
        assert "0 6 * * mon-fri" in text and "Europe/Paris" in text
        assert "webhook: POST /api/workflows/pipeline/runs" in text
        assert text.count("T06:00:00+0") == 3  # the next three fire times, local time
        shot(page, "workflows")
        card.locator("button.start").click()  # starts a run and opens its page
        page.wait_for_url("**/runs/*")
        assert page.locator("#run-id").inner_text() != ""


def test_with_a_token_the_browser_signs_in_and_its_actions_pass_the_csrf_check(
    tmp_path, browser_page
):
    page = browser_page
    token = "a-long-random-token-for-the-ui"
    with Serve(tmp_path, {"pipeline": PIPELINE}, env={"ORCH_API_TOKEN": token}) as srv:
        srv.http.headers["Authorization"] = f"Bearer {token}"
        run_id = start(srv)
        page.goto(f"{srv.url}/runs/{run_id}")
        assert page.url.endswith("/login")
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit]")
        assert "not right" in page.content()
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_url(srv.url + "/")
        page.goto(f"{srv.url}/runs/{run_id}")
        wait_state(page, "gate", "running")
        page.click("#btn-cancel")
        page.locator("body[data-status='cancelled']").wait_for()


def test_the_approve_and_reject_buttons_decide_a_waiting_phase(tmp_path, browser_page):
    page = browser_page
    with Serve(tmp_path, {"release": RELEASE}) as srv:
        for decision, final in (("approve", "completed"), ("reject", "failed")):
            run_id = srv.http.post("/api/workflows/release/runs", json={}).json()["id"]
            page.goto(f"{srv.url}/runs/{run_id}")
            wait_state(page, "ship", "waiting")
            box = page.locator(".approval[data-phase='ship']")
            message = "Phase ship waits for approval: Ship it?"  # it may follow the state
            wait_for(
                lambda box=box: "Ship it?" in box.inner_text(),
                "the approval box to show its message",
            )
            assert message in box.inner_text()
            if decision == "approve":
                shot(page, "run-waiting")
            page.click(f".approval[data-phase='ship'] button.{decision}")
            page.locator(f"body[data-status='{final}']").wait_for()
            assert page.locator(".approval").count() == 0
            assert node_state(page, "ship") == ("completed" if final == "completed" else "failed")


def test_the_logs_box_shows_a_phases_log_as_orch_logs_prints_it(tmp_path, browser_page):
    page = browser_page
    with Serve(tmp_path, {"pipeline": PIPELINE}) as srv:
        run_id = start(srv)
        page.goto(f"{srv.url}/runs/{run_id}")
        wait_state(page, "gate", "running")

        def shows(*phase: str) -> str:
            """What `orch logs RUN [--phase P]` prints, once the Logs box shows exactly that."""
            args = ("--phase", *phase) if phase else ()

            def same() -> str | None:
                printed = orch("logs", run_id, *args, state_dir=srv.state_dir).stdout
                return printed if page.text_content("#logs") == printed else None

            return wait_for(same, f"the Logs box to show `orch logs {' '.join(args)}`")

        page.select_option("#log-phase", "fetch")  # a phase that streamed its output
        fetch = shows("fetch")
        assert "phase_stream" in fetch and "fetched 3 accounts" in fetch
        assert "phase_completed" in fetch and "score" not in fetch
        page.select_option("#log-phase", "flaky")  # an attempt failed, then a retry
        assert "phase_retry" in shows("flaky")
        page.select_option("#log-phase", "gate")  # live: the box grows with the run
        assert "phase_completed" not in shows("gate")
        (srv.folder / "go").write_text("")
        page.locator("body[data-status='completed']").wait_for()
        gate = shows("gate")
        assert "opened" in gate and "phase_completed" in gate
        page.select_option("#log-phase", "")  # all phases: the whole `orch logs RUN`
        everything = shows()
        assert everything.splitlines()[-1].split()[1] == "workflow_completed"
        shot(page, "run-logs")
    # the API gives the same lines, one entry per event, with the phase's streamed text
    with Serve(tmp_path / "again", {"pipeline": PIPELINE}, state_dir=srv.state_dir) as again:
        entries = again.http.get(f"/api/runs/{run_id}/logs", params={"phase": "fetch"}).json()
        assert "".join(e["line"] + "\n" for e in entries) == fetch
        assert [e["text"] for e in entries if "text" in e] == ["fetched 3 accounts\n"]
        missing = again.http.get(f"/api/runs/{run_id}/logs", params={"phase": "fecth"})
        assert missing.status_code == 404
        assert missing.json()["hint"] == "did you mean 'fetch'?"


def test_the_logs_box_shows_a_log_longer_than_a_page_whole(tmp_path, browser_page):
    # 1,500 items: one line each, so the box reads the log in pages (1,000 lines a page)
    long = (
        "name: long\ntriggers:\n  - webhook: true\nphases:\n  - id: each\n    agent: echo\n"
        '    foreach: "{{ range(1500) | list }}"\n    with: {text: "item {{ item }}"}\n'
    )
    page = browser_page
    with Serve(tmp_path, {"long": long}) as srv:
        run_id = srv.http.post("/api/workflows/long/runs", json={}).json()["id"]
        srv.run_when(run_id, "completed")
        page.goto(f"{srv.url}/runs/{run_id}")
        page.locator("body[data-status='completed']").wait_for()
        printed = orch("logs", run_id, state_dir=srv.state_dir).stdout
        assert len(printed.splitlines()) > 1500
        wait_for(lambda: page.text_content("#logs") == printed, "the whole log in the Logs box")
        page.select_option("#log-phase", "each")
        each = orch("logs", run_id, "--phase", "each", state_dir=srv.state_dir).stdout
        wait_for(lambda: page.text_content("#logs") == each, "the phase's log in the Logs box")
