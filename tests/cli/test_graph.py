"""`orch graph`: the real command on real files, in every format, and its renderers."""

from __future__ import annotations

import io
import json
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.plan import compile_plan
from orchestrator.render.graph import graph_dot, graph_json, graph_mermaid, write_graph
from orchestrator.spec.model import Phase, Workflow

ACCOUNT = """\
version: 1
name: account-analysis
phases:
  - id: fetch_account
    agent: echo
    with: {text: account}
    estimated_duration: 2
  - id: analyze_risk
    agent: echo
    with: {text: "risk of {{ phases.fetch_account.output }}"}
  - id: history
    agent: echo
    depends_on: [fetch_account]
    with: {text: history}
    estimated_duration: 5
  - id: recommend
    agent: echo
    depends_on: [history]
    with: {text: "{{ phases.analyze_risk.output }}"}
    priority: high
"""


@pytest.fixture
def account(tmp_path):
    path = tmp_path / "account.yaml"
    path.write_text(ACCOUNT)
    return path


def _orch(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env or {"NO_COLOR": "1"})


def test_ascii_draws_levels_edges_implied_edges_and_the_critical_path(account):
    result = _orch("graph", str(account))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b[" not in out  # no colour codes when not on a terminal
    lines = out.splitlines()
    assert lines[0] == "account-analysis  (4 phases, 3 levels)"
    levels = [line.strip("│├└─ ") for line in lines if re.fullmatch(r"[│├└─ ]*level \d+", line)]
    assert levels == ["level 0", "level 1", "level 2"]
    assert any(line.endswith("* fetch_account  echo, ~2s") for line in lines)
    assert any(line.endswith("* history  echo, ~5s") for line in lines)
    assert any(line.endswith("  analyze_risk  echo") for line in lines)
    assert any(line.endswith("* recommend  echo, priority high") for line in lines)
    assert any(line.endswith("fetch_account ──▶ history") for line in lines)
    assert any(line.endswith("analyze_risk ┄┄▶ recommend  (implied)") for line in lines)
    assert any(line.endswith("fetch_account ┄┄▶ analyze_risk  (implied)") for line in lines)
    assert "critical path (8s): fetch_account ──▶ history ──▶ recommend" in lines
    assert lines[-1].startswith("legend: ──▶ depends_on   ┄┄▶ implied by a phases.X reference")


def test_ascii_is_coloured_on_a_terminal_and_the_critical_path_stands_out():
    plan = compile_plan(
        Workflow(
            name="w",
            phases=(Phase(id="a", agent="noop"), Phase(id="b", agent="noop", depends_on=("a",))),
        )
    )
    buf = io.StringIO()
    write_graph(plan, "ascii", buf, color=True)
    assert "\x1b[1;31m* \x1b[0m\x1b[1;31mb\x1b[0m" in buf.getvalue()
    plain = io.StringIO()
    write_graph(plan, "ascii", plain, color=False)
    assert "\x1b[" not in plain.getvalue() and "* b  noop" in plain.getvalue()


def test_an_implied_edge_on_the_critical_path_keeps_its_dotted_arrow():
    wf = Workflow(
        name="w",
        phases=(Phase(id="a", agent="noop"), Phase(id="b", agent="noop", implied_deps=("a",))),
    )
    buf = io.StringIO()
    write_graph(compile_plan(wf), "ascii", buf, color=False)
    assert "critical path (2s): a ┄┄▶ b" in buf.getvalue().splitlines()


def test_json_is_the_plan_for_machines(account):
    result = _orch("graph", str(account), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["name"] == "account-analysis"
    assert data["order"] == ["fetch_account", "analyze_risk", "history", "recommend"]
    assert data["levels"] == [["fetch_account"], ["analyze_risk", "history"], ["recommend"]]
    assert data["critical_path"] == ["fetch_account", "history", "recommend"]
    assert data["critical_length"] == 8.0
    by_id = {p["id"]: p for p in data["phases"]}
    assert by_id["recommend"] == {
        "id": "recommend",
        "agent": "echo",
        "depends_on": ["history"],
        "implied": ["analyze_risk"],
        "level": 2,
        "priority": "high",
        "estimated_duration": None,
        "foreach": False,
        "when": None,
        "capability": None,
        "one_of": None,
        "select": None,
        "handoff": None,
        "approval": None,
        "repeat": None,
        "compensate": None,
    }
    assert by_id["fetch_account"]["estimated_duration"] == 2
    assert by_id["analyze_risk"]["implied"] == ["fetch_account"]


def test_mermaid_is_a_flowchart_with_dotted_implied_edges_and_a_critical_class(account):
    result = _orch("graph", str(account), "-f", "mermaid")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "flowchart TD"
    assert '    p0["fetch_account<br/>echo"]' in lines
    assert "    p0 --> p2" in lines  # fetch_account -> history
    assert "    p0 -.-> p1" in lines  # implied: analyze_risk reads fetch_account
    assert "    p1 -.-> p3" in lines
    assert "    class p0,p2,p3 critical" in lines
    assert any(line.startswith("    classDef critical ") for line in lines)
    edges = [line for line in lines if re.fullmatch(r"    p\d+ (-->|-\.->) p\d+", line)]
    # linkStyle numbers edges in definition order: the two critical ones
    critical = {i for i, e in enumerate(edges) if e in ("    p0 --> p2", "    p2 --> p3")}
    assert f"    linkStyle {','.join(map(str, sorted(critical)))} " in result.output


def test_dot_is_a_digraph_with_dashed_implied_edges_and_a_red_critical_path(account):
    result = _orch("graph", str(account), "--format", "DOT")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith('digraph "account-analysis" {\n') and out.endswith("}\n")
    assert '"fetch_account" -> "history" [color=red, penwidth=2];' in out
    assert '"fetch_account" -> "analyze_risk" [style=dashed];' in out
    assert '"analyze_risk" -> "recommend" [style=dashed];' in out
    assert '"history" [label="history\\necho", color=red, penwidth=2];' in out
    assert '"analyze_risk" [label="analyze_risk\\necho"];' in out


def test_names_are_escaped_in_dot_and_mermaid():
    name = 'evil "name" \\ with <b>#1</b>\nsecond line'
    wf = Workflow(name=name, phases=(Phase(id="end", agent='ag"ent'),))
    plan = compile_plan(wf)
    dot = graph_dot(plan)
    assert dot.splitlines()[0] == 'digraph "evil \\"name\\" \\\\ with <b>#1</b>\\nsecond line" {'
    assert '"end" [label="end\\nag\\"ent", color=red, penwidth=2];' in dot
    mermaid = graph_mermaid(plan)
    assert '    p0["end<br/>ag#quot;ent"]' in mermaid.splitlines()
    assert "second line" in mermaid.splitlines()[1]  # the name stays on its comment line
    assert graph_json(plan)["name"] == name


def test_handoff_phases_show_their_agents():
    from orchestrator.spec.model import HandoffSpec

    wf = Workflow(
        name="h",
        phases=(Phase(id="triage", agent=None, handoff=HandoffSpec(("a", "b"), "a")),),
    )
    facts = graph_json(compile_plan(wf))["phases"][0]
    assert facts["agent"] is None  # a name or null, never words
    assert facts["handoff"] == {"agents": ["a", "b"], "start": "a", "max_turns": 10}
    assert "handoff: a, b" in graph_mermaid(compile_plan(wf))


ROUTED = """\
version: 1
name: routed
agents:
  cheap: {type: echo}
  premium: {type: echo}
  summarizer: {type: echo, capabilities: [summarize]}
phases:
  - id: pick
    agent: {one_of: [cheap, premium], select: "{{ 'cheap' }}"}
    with: {text: hi}
  - id: digest
    capability: summarize
    with: {text: hi}
  - id: gate
    agent: echo
    approval: {message: "ship it?", timeout: 1h, on_timeout: approve}
    with: {text: ok}
  - id: draft
    agent: echo
    depends_on: [gate]
    repeat: {max: 3, until: "iteration.n >= 2", on_max: fail}
    with: {text: x}
"""


def _real_orch(*args: str) -> str:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_graph_json_carries_routing_approval_and_repeat_as_fields(tmp_path):
    wf = tmp_path / "routed.yaml"
    wf.write_text(ROUTED)
    phases = {p["id"]: p for p in json.loads(_real_orch("graph", str(wf), "-f", "json"))["phases"]}
    assert phases["pick"]["agent"] is None  # chosen at run time: no words in agent
    assert phases["pick"]["one_of"] == ["cheap", "premium"]
    assert phases["pick"]["select"] == "{{ 'cheap' }}"
    assert phases["digest"]["agent"] is None
    assert phases["digest"]["capability"] == "summarize"
    assert phases["gate"]["agent"] == "echo"
    assert phases["gate"]["approval"] == {
        "message": "ship it?",
        "timeout": 3600.0,
        "on_timeout": "approve",
    }
    assert phases["draft"]["repeat"] == {"max": 3, "until": "iteration.n >= 2", "on_max": "fail"}
    for pid in ("pick", "digest", "draft"):
        assert phases[pid]["approval"] is None
    for pid in ("pick", "digest", "gate"):
        assert phases[pid]["repeat"] is None
        assert phases[pid]["handoff"] is None


def test_dry_run_shows_what_the_graph_shows_of_each_phase(tmp_path):
    wf = tmp_path / "routed.yaml"
    wf.write_text(ROUTED)
    plan = _real_orch("run", str(wf), "--dry-run")
    graph = _real_orch("graph", str(wf))
    for words in (
        "one of cheap, premium",
        "capability summarize",
        "approval (timeout 1h00m, then approve)",
        "repeat until iteration.n >= 2 (max 3, on_max fail)",
    ):
        assert words in plan, plan
        assert words in graph, graph
    assert '  3. gate  agent echo\n     approval (timeout 1h00m, then approve): "ship it?"' in plan
    assert "     select: {{ 'cheap' }}" in plan


def test_an_invalid_file_prints_the_validate_problems_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            name: bad
            phases:
              - id: design
                agent: echo
              - id: build
                agent: echo
                depends_on: [desgin]
            """
        )
    )
    result = _orch("graph", str(bad))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert re.search(
        rf"{re.escape(str(bad))}:7:\d+: .*'desgin'.*did you mean 'design'", result.output
    )
    validate = _orch("validate", str(bad))
    problems = [line for line in validate.output.splitlines() if str(bad) + ":" in line]
    assert problems and all(p in result.output for p in problems)


def test_a_missing_file_and_a_cycle_exit_2_without_a_traceback(tmp_path):
    missing = _orch("graph", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert "nope.yaml:1:1:" in missing.output
    cyclic = tmp_path / "cycle.yaml"
    cyclic.write_text(
        "name: c\nphases:\n  - {id: a, agent: noop, depends_on: [b]}\n"
        "  - {id: b, agent: noop, depends_on: [a]}\n"
    )
    result = _orch("graph", str(cyclic), "--format", "json")
    assert result.exit_code == 2 and "cycle: " in result.output
    assert "Traceback" not in result.output


def test_an_unknown_format_is_a_usage_error(account):
    result = _orch("graph", str(account), "--format", "png")
    assert result.exit_code == 2
    assert "png" in result.output


def test_python_dash_m_orchestrator_runs_orch_graph_as_a_process(account):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "graph", str(account), "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["critical_path"] == ["fetch_account", "history", "recommend"]
    usage = subprocess.run(
        [sys.executable, "-m", "orchestrator", "graph"], capture_output=True, text=True
    )
    assert usage.returncode == 2 and usage.stderr.startswith("Usage: orch graph")


def test_the_graph_of_a_file_is_the_same_under_different_hash_seeds(tmp_path):
    import os
    import subprocess
    import sys

    lines = ["name: seeds", "phases:"]
    for i in range(60):
        refs = " ".join(f"{{{{ phases.p{j}.output }}}}" for j in range(i) if (i * j) % 7 == 3)
        deps = [f"p{j}" for j in range(i) if (i + j) % 11 == 5]
        lines += [f"  - id: p{i}", "    agent: echo", f"    with: {{text: '{refs}'}}"]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
    path = tmp_path / "seeds.yaml"
    path.write_text("\n".join(lines) + "\n")
    outputs = set()
    for seed in ("0", "1", "99"):
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "graph", str(path), "-f", "json"],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1
    data = json.loads(outputs.pop())
    assert any(p["implied"] for p in data["phases"]) and any(
        p["depends_on"] for p in data["phases"]
    )


def test_handler_phases_are_listed_apart_from_the_dag(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text(
        "name: h\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
        "on_failure:\n  - {id: notify, agent: echo, with: {text: 'failed {{ run.id }}'}}\n"
        "finally:\n  - {id: cleanup, agent: noop}\n"
    )
    text = _orch("graph", str(path))
    assert text.exit_code == 0, text.output
    assert "on_failure: notify (echo)" in text.output.splitlines()
    mermaid = _orch("graph", str(path), "-f", "mermaid").output
    assert 'subgraph on_failure["on_failure: after the run failed"]' in mermaid
    assert '        on_failure_0["notify<br/>echo"]' in mermaid
    assert 'finally_0["cleanup<br/>noop"]' in mermaid
    dot = _orch("graph", str(path), "-f", "dot").output
    assert 'subgraph "cluster_finally" {' in dot
    assert '"finally:cleanup" [label="cleanup\\nnoop"];' in dot
    assert "finally: cleanup (noop)" in text.output.splitlines()
    data = json.loads(_orch("graph", str(path), "-f", "json").output)
    assert data["handlers"] == {"on_success": [], "on_failure": ["notify"], "finally": ["cleanup"]}
    assert data["order"] == ["a"]


_WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.yaml"))


@pytest.mark.parametrize("path", _WORKFLOWS, ids=[p.stem for p in _WORKFLOWS])
def test_every_shipped_workflow_draws_in_every_format(path):
    data = json.loads(_orch("graph", str(path), "-f", "json").output)
    assert sorted(data["order"]) == sorted(p["id"] for p in data["phases"])
    assert data["critical_path"] and data["critical_path"][0] in data["levels"][0]
    for fmt, first in (("ascii", data["name"]), ("mermaid", "flowchart TD"), ("dot", "digraph ")):
        result = _orch("graph", str(path), "-f", fmt)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(first)


def test_foreach_and_when_are_drawn_in_every_format(tmp_path):
    path = tmp_path / "fw.yaml"
    path.write_text(
        "name: fw\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
        "  - id: b\n    foreach: [1, 2, 3]\n    agent: echo\n"
        "    when: \"phases.a.output == 'hi'\"\n    with: {text: '{{ item }}'}\n"
        "    compensate: {agent: noop}\n"
    )
    ascii_ = _orch("graph", str(path)).output
    assert "b  echo, foreach 3 items, when: phas" in ascii_
    mermaid = _orch("graph", str(path), "-f", "mermaid").output
    assert "foreach 3 items<br/>when: phases.a.output == 'hi'" in mermaid
    dot = _orch("graph", str(path), "-f", "dot").output
    assert "foreach 3 items\\nwhen: phases.a.output == 'hi'\\ncompensate: noop" in dot
    data = json.loads(_orch("graph", str(path), "-f", "json").output)
    by_id = {p["id"]: p for p in data["phases"]}
    assert (by_id["b"]["foreach"], by_id["b"]["when"]) == (True, "phases.a.output == 'hi'")
