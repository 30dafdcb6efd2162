"""What CI sees of `orch run`: --junit (read with junitparser), GitHub annotations and the
step summary (GITHUB_ACTIONS, GITHUB_STEP_SUMMARY), and FORCE_COLOR, through the real command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import junitparser
import pytest

WORKFLOW = """\
name: ci-demo
phases:
  - id: greet
    agent: echo
    with: {text: hello}
  - id: flaky
    agent: fail
    retries: {attempts: 1, backoff: fixed, delay: 1ms}
    with: {times: 1, output: ok}
  - id: never
    agent: echo
    when: "false"
    with: {text: no}
  - id: boom
    agent: fail
    depends_on: [greet, flaky]
    with: {message: "card declined, 100% sure"}
finally:
  - id: cleanup
    agent: noop
"""
BOOM_LINE = WORKFLOW.splitlines().index("  - id: boom") + 1
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*3\dm")


def orch(*args, cwd, env=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "FORCE_COLOR"))}
    base.pop("NO_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def workflow(tmp_path):
    (tmp_path / "wf.yaml").write_text(WORKFLOW, encoding="utf-8")
    return tmp_path


def _events(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def _durations(events):
    return {
        e["phase"]: e["data"]["duration"]
        for e in events
        if e["event"] in ("phase_completed", "phase_failed")
    }


def test_junit_has_one_testcase_per_phase_with_failures_skips_and_times(workflow):
    result = orch("run", "wf.yaml", "--junit", "report.xml", "--events", "jsonl", cwd=workflow)
    assert result.returncode == 1, result.stderr
    durations = _durations(_events(result.stdout))
    xml = junitparser.JUnitXml.fromfile(str(workflow / "report.xml"))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    assert len(suites) == 1
    suite = suites[0]
    assert suite.name == "ci-demo"
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 1, 0, 1)
    cases = {case.name: case for case in suite}
    assert list(cases) == ["greet", "flaky", "never", "boom", "cleanup"]
    assert cases["greet"].is_passed and cases["flaky"].is_passed and cases["cleanup"].is_passed
    (failure,) = cases["boom"].result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message == "card declined, 100% sure"
    assert "after 1 attempt\n" in failure.text
    (skipped,) = cases["never"].result
    assert isinstance(skipped, junitparser.Skipped)
    assert skipped.message == "when is false: false"
    for name, seconds in durations.items():  # the times are the recorded ones
        assert cases[name].time == pytest.approx(seconds, abs=0.001)


def test_a_missing_junit_folder_is_refused_before_anything_runs(workflow):
    result = orch("run", "wf.yaml", "--junit", "nowhere/report.xml", cwd=workflow)
    assert result.returncode == 2
    assert "--junit 'nowhere/report.xml': the folder" in result.stderr
    assert "started" not in result.stderr


def test_github_actions_gets_an_annotation_at_the_failed_phase_and_a_step_summary(workflow):
    summary = workflow / "summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_WORKSPACE": str(workflow.parent),
    }
    result = orch(
        "run", str(workflow / "wf.yaml"), "--events", "jsonl", cwd=workflow.parent, env=env
    )
    assert result.returncode == 1, result.stderr
    events = _events(result.stdout)
    annotations = [line for line in result.stderr.splitlines() if line.startswith("::")]
    # the one failed phase, at its place in the file (path relative to the workspace),
    # with GitHub's escaping of ',' and ':' in properties and '%' in the message
    assert annotations == [
        f"::error file={workflow.name}/wf.yaml,line={BOOM_LINE},col=5,title=orch%3A ci-demo"
        "::phase 'boom' failed: card declined, 100%25 sure"
    ]
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("# earlier step\n### ")  # appended, never overwritten
    assert "orch: ci-demo failed in" in text
    assert re.search(
        r"^\| boom \| \S+ failed \| \d+ms \| 1 \| card declined, 100% sure \|$", text, re.M
    )
    assert re.search(r"^\| never \| \S+ skipped \| - \| - \| when is false: false \|$", text, re.M)
    assert re.search(r"^\| flaky \| \S+ completed \| \d+ms \| 2 \| +\|$", text, re.M)
    gantt = text[text.index("```mermaid") :]
    bars = dict(re.findall(r"^    (\w+) :\w+, (\d+, \d+)$", gantt, re.M))
    starts = {e["phase"]: e["ts"] for e in reversed(events) if e["event"] == "phase_started"}
    ends = {
        e["phase"]: e["ts"] for e in events if e["event"] in ("phase_completed", "phase_failed")
    }
    assert set(bars) == {"greet", "flaky", "boom", "cleanup"}  # the skipped phase has no bar
    for name, bar in bars.items():
        start, end = (int(x) for x in bar.split(", "))
        assert start == int(starts[name] * 1000)
        assert end == max(int(ends[name] * 1000), start + 1)
    assert re.search(r"^    boom :crit, ", gantt, re.M)


def test_outside_github_actions_nothing_of_it_is_printed(workflow):
    summary = workflow / "summary.md"
    result = orch("run", "wf.yaml", cwd=workflow, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode == 1
    assert "::error" not in result.stderr
    assert not summary.exists()


def test_force_color_colours_the_summary_of_a_pipe_without_the_live_display(workflow):
    plain = orch("run", "wf.yaml", cwd=workflow)
    assert not ANSI_COLOUR.search(plain.stderr)
    forced = orch("run", "wf.yaml", cwd=workflow, env={"FORCE_COLOR": "1"})
    assert ANSI_COLOUR.search(forced.stderr)
    assert "\x1b[?25l" not in forced.stderr and "\x1b[2K" not in forced.stderr  # no live display
    assert re.search(
        r"^\d\d:\d\d:\d\d\.\d{3} phase boom failed: card declined", forced.stderr, re.M
    )
    both = orch("run", "wf.yaml", cwd=workflow, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not ANSI_COLOUR.search(both.stderr)  # NO_COLOR wins
    off = orch("run", "wf.yaml", cwd=workflow, env={"FORCE_COLOR": "0"})
    assert not ANSI_COLOUR.search(off.stderr)
