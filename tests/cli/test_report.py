"""`orch report RUN`: one self-contained HTML page, opened in a real headless chromium.

The run has retries, a cache hit, a failure with streamed output, a skip, a
compensation and a finally handler; the Gantt bars in the page must sit where
the recorded events say each attempt, wait and compensation began and ended.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()

WORKFLOW = """\
name: report-demo
phases:
  - id: book
    agent: echo
    cache: true
    with: {text: booked}
    compensate: {agent: echo, with: {text: unbook}}
  - id: flaky
    agent: fail
    retries: {attempts: 2, backoff: fixed, delay: 50ms}
    with: {times: 2, output: ok}
  - id: talk
    agent: shell
    depends_on: [book, flaky]
    with: {command: [sh, -c, "echo line one; echo line two; exit 3"], stream: true}
  - id: later
    agent: echo
    when: "phases.talk.output == 'never'"
    depends_on: [talk]
    with: {text: x}
finally:
  - id: clean
    agent: noop
"""


def orch(*args, state):
    return runner.invoke(app, [*args, "--state-dir", str(state)])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two runs of the workflow (the second hits the cache); the second's id and events."""
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "wf.yaml"
    path.write_text(WORKFLOW, encoding="utf-8")
    state = tmp / "state"
    for _ in range(2):
        result = orch("run", str(path), "--events", "jsonl", state=state)
        assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return tmp, state, events[0]["run_id"], events


def _expected_bars(events):
    """(phase, kind, outcome, start, end) straight from the recorded events."""
    bars, started, compensating = [], {}, {}
    for e in events:
        pid, kind = e.get("phase"), e["event"]
        if kind == "phase_started":
            started[pid] = e["ts"]
        elif kind == "phase_retry":  # the next attempt starts when the delay is over
            bars.append((pid, "attempt", "retried", started.pop(pid), e["ts"]))
            bars.append((pid, "wait", "retry", e["ts"], e["ts"] + e["data"]["delay"]))
            started[pid] = e["ts"] + e["data"]["delay"]
        elif kind in ("phase_completed", "phase_failed") and pid in started:
            outcome = "cached" if e["data"].get("cached") else e["data"]["status"]
            bars.append((pid, "attempt", outcome, started.pop(pid), e["ts"]))
        elif kind == "phase_stream" and e["data"].get("compensation"):
            compensating[pid] = e["ts"]
        elif kind == "phase_compensated":
            bars.append((pid, "compensation", "ok", compensating.pop(pid), e["ts"]))
    return sorted(bars, key=lambda b: (b[3], b[4]))


def test_the_report_is_one_offline_page_whose_gantt_matches_the_recorded_times(
    recorded, browser_page
):
    tmp, state, run_id, events = recorded
    out = tmp / "report.html"
    result = orch("report", run_id[:8], "-o", str(out), state=state)
    assert result.exit_code == 0, result.output
    page = browser_page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(out.as_uri())
    assert requests == [out.as_uri()]  # nothing else is fetched: no CDN, no font, no script
    assert page.title() == f"orch run {run_id}: report-demo"
    summary = page.inner_text("#summary")
    assert "failed" in summary and "phase 'talk' failed" in summary
    # the timeline: one bar per attempt, wait and compensation, at the recorded times
    svg = page.locator("#gantt")
    t0, t1 = float(svg.get_attribute("data-t0")), float(svg.get_attribute("data-t1"))
    x0, width = float(svg.get_attribute("data-x0")), float(svg.get_attribute("data-width"))
    box = svg.bounding_box()
    shown = []
    for bar in page.locator("#gantt rect.bar").all():
        start, end = float(bar.get_attribute("data-start")), float(bar.get_attribute("data-end"))
        shown.append(
            (
                bar.get_attribute("data-phase"),
                bar.get_attribute("data-kind"),
                bar.get_attribute("data-outcome"),
                start,
                end,
            )
        )
        drawn = bar.bounding_box()  # where chromium drew it, in page pixels
        assert drawn["x"] - box["x"] == pytest.approx(x0 + (start - t0) / (t1 - t0) * width, abs=1)
        assert drawn["width"] == pytest.approx((end - start) / (t1 - t0) * width, abs=1)
    assert shown == _expected_bars(events)
    kinds = {(p, k, o) for p, k, o, _, _ in shown}
    assert {
        ("book", "attempt", "cached"),
        ("flaky", "attempt", "retried"),
        ("flaky", "wait", "retry"),
        ("flaky", "attempt", "completed"),
        ("talk", "attempt", "failed"),
        ("book", "compensation", "ok"),
        ("clean", "attempt", "completed"),
    } <= kinds
    # the graph: every phase and the handler, coloured by state, `when:` written out
    nodes = {
        n.get_attribute("data-phase"): n.get_attribute("data-state")
        for n in page.locator("#graph g.node").all()
    }
    assert nodes == {
        "book": "completed",
        "flaky": "completed",
        "talk": "failed",
        "later": "skipped",
        "clean": "completed",
    }
    assert "when: phases.talk.output ==" in page.text_content("#graph g.node[data-phase=later]")
    assert page.locator("#graph g.node[data-phase=clean]").get_attribute("data-handler") == (
        "finally"
    )
    # errors with their log tail
    error = page.inner_text(".error[data-phase=talk]")
    assert "exit" in error and "3" in error
    assert "line one\nline two" in page.inner_text(".error[data-phase=talk] pre.tail")
    # the phase table
    assert "cached" in page.inner_text("#phases tr[data-phase=book]")


def test_report_of_an_unknown_run_and_to_stdout(recorded):
    tmp, state, run_id, _ = recorded
    missing = orch("report", "nope", state=state)
    assert missing.exit_code == 2
    assert "no run 'nope'" in missing.output
    page = orch("report", run_id, "-o", "-", state=state)
    assert page.exit_code == 0
    assert page.stdout.startswith("<!doctype html>")
    assert "<script" not in page.stdout and "http://" not in page.stdout.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
