"""Template CPU and memory bombs (issue 9, item 8; reliability X8): every template either
renders within its bounds or fails its phase with a clear message; a phase timeout and
SIGTERM stop a runaway render (it runs off the event loop and checks a cancel flag)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import expr
from orchestrator.cli import app
from orchestrator.errors import ExpressionError

runner = CliRunner()

LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
BOMBS = [
    ("{{ '%0999999999d' % 1 }}", "format width 999999999"),
    ("{{ '%*d' % (999999999, 1) }}", "format width 999999999"),
    ("{{ '%(a)0999999999d' % {'a': 1} }}", "format width 999999999"),
    ("{{ '%0999999999d' | format(1) }}", "format width 999999999"),
    ("{{ '{:>999999999}'.format(1) }}", "format width 999999999"),
    ("{{ '{0:{1}}'.format(1, 10**9) }}", "format width 1000000000"),
    ("{{ 'x'.ljust(10**9) }}", "ljust() width"),
    ("{{ 'x'.center(10**9) }}", "center() width"),
    ("{{ 'x'.zfill(10**9) }}", "zfill() width"),
    ("{{ 'a\tb'.expandtabs(10**9) }}", "expandtabs() width"),
    ("{{ 'x' | indent(10**9, true) }}", "exceeds 1000000"),
    ("{{ 'x' | center(10**9) }}", "exceeds 1000000"),
    ("{{ [1] | batch(10**9, 'x') | list }}", "exceeds 1000000"),
    ("{{ [1] | slice(10**9) | list }}", "exceeds 1000000"),
    ("{{ {'a': 1} | tojson(indent=10**9) }}", "tojson indent"),
    ("{{ lipsum(100000, false, 1000, 1000) }}", "lipsum() gives at most 100 paragraphs"),
    ("{{ range(10**9) | list }}", "range() gives at most 100,000 items"),
    ("{{ ('x' * 1000000).replace('x', 'yy') }}", "replace() would exceed"),
    ("{{ ('x' * 1000000) | replace('x', 'yy') }}", "replace() would exceed"),
    ("{{ ['x' * 1000000] * 1000000 }}", "repeating a sequence"),
    ("{{ (['x' * 1000] * 1000) | join('-' * 1000) }}", "join() would exceed"),
    ("{{ [0] * 1000000 + [0] * 1000000 }}", "joining two sequences"),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "joining text with ~",
    ),
    (
        "{% set ns = namespace(x=7) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}"
        "{% endfor %}{{ ns.x }}",
        "the product is too large",
    ),
    (LOOPS, "rendering took longer than"),
    (LOOPS.replace("{% endfor %}{% endfor %}", "x{% endfor %}{% endfor %}"), "longer than"),
]


@pytest.mark.parametrize(("template", "expected"), BOMBS)
def test_each_bomb_is_refused_with_a_clear_message(template, expected):
    with pytest.raises(ExpressionError) as info:
        expr.render(template, {}, budget=expr.Budget(0.5))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ '%05d' % 42 }}", "00042"),
        ("{{ '{:>6}'.format('ab') }}", "    ab"),
        ("{{ 'ab'.ljust(4, '.') }}", "ab.."),
        ("{{ 'a\nb' | indent(2, true) }}", "  a\n  b"),
        ("{% for i in range(3) %}{{ loop.index }}/{{ loop.length }} {% endfor %}", "1/3 2/3 3/3 "),
        ("{{ 'a' ~ 1 ~ none }}", "a1None"),
        ("{{ range(3) | list }}", [0, 1, 2]),
        ("{{ ['a', 'b'] | join(', ') }}", "a, b"),
        ("{{ 10 ** 100 * 10 ** 100 }}", 10**200),
        ("{{ 7 % 3 }}", 1),
    ],
)
def test_ordinary_templates_still_render(template, value):
    assert expr.render(template, {}) == value


def test_a_cancelled_budget_stops_a_render_at_its_next_step():
    budget = expr.Budget(60)
    budget.cancel()
    with pytest.raises(ExpressionError, match="rendering was cancelled"):
        expr.render(LOOPS, {}, budget=budget)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))
    return tmp_path


def test_the_phase_timeout_bounds_its_render_and_fails_the_phase_only(in_tmp: Path):
    wf = in_tmp / "wf.yaml"
    wf.write_text(
        "version: 1\nname: bomb\nerror_handling: {continue_on_error: true}\nphases:\n"
        "  - id: slow\n    agent: echo\n    timeout: 300ms\n"
        f'    with: {{text: "{LOOPS}"}}\n'
        "  - id: loops_in_when\n    agent: echo\n    timeout: 300ms\n"
        "    when: \"range(100000) | map('string') | list | length > 0 and "
        "range(100000) | map('string') | list | length > 0\"\n    with: {text: 1}\n"
        "  - id: other\n    agent: echo\n    with: {text: fine}\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["run", str(wf), "--events", "jsonl"])
    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    failed = {e["phase"]: e["data"]["error"] for e in events if e["event"] == "phase_failed"}
    assert "rendering took longer than 300ms (the phase's timeout)" in failed["slow"]
    assert "wf.yaml:8:18:" in failed["slow"]  # at the key (item 10)
    assert {e["phase"] for e in events if e["event"] == "phase_completed"} >= {"other"}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_a_runaway_render_and_cancels_the_run(tmp_path: Path, processes):
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "version: 1\nname: bomb\nphases:\n"
        "  - id: first\n    agent: echo\n    with: {text: go}\n"
        f"  - id: runaway\n    agent: echo\n    depends_on: [first]\n"
        f'    with: {{text: "{LOOPS}"}}\n',
        encoding="utf-8",
    )
    proc = processes.start(
        [sys.executable, "-m", "orchestrator", "run", str(wf), "--events", "jsonl"],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch")},
    )
    events = []
    while True:  # the render starts right after phase_started
        line = proc.line()
        assert line, proc.stderr
        events.append(json.loads(line))
        if events[-1]["event"] == "phase_started" and events[-1]["phase"] == "runaway":
            break
    proc.proc.send_signal(signal.SIGTERM)
    code, rest, err = proc.finish()
    events += [json.loads(line) for line in rest]
    assert code == 143, err
    assert "Traceback" not in err
    assert events[-1]["event"] == "workflow_cancelled"
    ended = {e["phase"]: e["data"] for e in events if e["event"] == "phase_failed"}
    # cancelled while rendering: had the render held the event loop, it would have run
    # to its own deadline first and the phase would have failed with "took longer than"
    assert ended["runaway"]["status"] == "cancelled", ended
