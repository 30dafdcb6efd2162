"""`orch validate`: the real command on real files, in every format, and the exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from orchestrator.cli import app

GOOD = """\
name: demo
agents:
  greeter: {type: echo}
phases:
  - {id: a, agent: greeter, with: {text: hi}}
  - {id: b, agent: echo, with: {text: "{{ phases.a.output }}"}}
"""
BAD = """\
name: demo
phases:
  - id: a
    agent: ech
    timeout: forever
  - id: b
    agent: echo
    depends_on: [c]
"""


def _run(*args):
    return CliRunner().invoke(app, ["validate", *map(str, args)])


def test_a_valid_file_prints_one_short_line_and_exits_0(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = _run(path)
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: ok (2 phases, 1 agent)\n"


def test_every_problem_of_every_file_is_printed_and_exit_is_2(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    result = _run(good, bad)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{good}: ok (2 phases, 1 agent)",
        f"{bad}:4:12: unknown agent 'ech'; did you mean 'echo'?",
        f"{bad}:5:14: phases[0].timeout: 'forever' is not a duration;"
        " use 500ms, 30s, 5m, 1h or a number of seconds",
        f"{bad}:8:18: unknown phase 'c' in depends_on",
        "  hint: known phases: a, b",
    ]


def test_missing_file_and_directory_are_located_problems(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = _run(missing, tmp_path)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{missing}:1:1: no such file '{missing}'",
        "  hint: check the path and the spelling",
        f"{tmp_path}:1:1: '{tmp_path}' is a directory, not a workflow file",
        "  hint: give the path of a .yaml file",
    ]


def test_json_format_is_a_list_of_problems(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    result = _run("--format", "json", bad)
    assert result.exit_code == 2
    problems = json.loads(result.output)
    assert [(p["line"], p["col"], p["code"]) for p in problems] == [
        (4, 12, "unknown-reference"),
        (5, 14, "schema"),
        (8, 18, "unknown-reference"),
    ]
    assert problems[0] == {
        "file": str(bad),
        "line": 4,
        "col": 12,
        "severity": "error",
        "code": "unknown-reference",
        "message": "unknown agent 'ech'; did you mean 'echo'?",
        "hint": None,
    }
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    ok = _run("--format", "json", good)
    assert ok.exit_code == 0 and json.loads(ok.output) == []


def test_github_format_gives_escaped_annotations(tmp_path):
    bad = tmp_path / "b,a:d.yaml"
    bad.write_text("name: x\nphases:\n  - id: a\n    agent: echo\n    depends_on: [z]\n")
    result = _run("--format", "github", bad)
    assert result.exit_code == 2
    escaped = str(bad).replace(":", "%3A").replace(",", "%2C")
    assert result.output == (
        f"::error file={escaped},line=5,col=18::unknown phase 'z' in depends_on"
        "%0Ahint: known phases: a\n"
    )


def test_bad_format_is_a_usage_error():
    result = _run("--format", "xml", "x.yaml")
    assert result.exit_code == 2


def test_the_installed_command_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: x\nphases: [\n")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout.startswith(f"{bad}:3:1: invalid YAML: ")
    assert "Traceback" not in proc.stderr


def test_graph_and_run_reuse_load_or_exit(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    result = CliRunner().invoke(app, ["graph", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:4:12: unknown agent 'ech'; did you mean 'echo'?" in result.output


class _Tty:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return True

    @property
    def text(self):
        return "".join(self.parts)


def test_colour_on_a_terminal_only_and_never_with_no_color(monkeypatch):
    from orchestrator.errors import Location, Problem
    from orchestrator.render.problems import format_problems, write_problems

    problems = [
        Problem(Location("w.yaml", 3, 5), "bad thing", hint="do this"),
        Problem(Location("w.yaml", 4, 1), "odd thing", severity="warning"),
    ]
    plain = "w.yaml:3:5: bad thing\n  hint: do this\nw.yaml:4:1: warning: odd thing"
    assert format_problems(problems, "text") == plain
    assert format_problems(problems, "github").splitlines() == [
        "::error file=w.yaml,line=3,col=5::bad thing%0Ahint: do this",
        "::warning file=w.yaml,line=4,col=1::odd thing",
    ]
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    tty = _Tty()
    write_problems(problems, "text", tty)  # type: ignore[arg-type]
    assert "\x1b[" in tty.text
    assert "bad thing" in tty.text and "hint: do this" in tty.text
    monkeypatch.setenv("NO_COLOR", "1")
    tty = _Tty()
    write_problems(problems, "text", tty)  # type: ignore[arg-type]
    assert tty.text == plain + "\n"


def test_an_inputs_file_is_named_as_such_in_every_message(tmp_path):
    workflow = tmp_path / "w.yaml"
    workflow.write_text("name: demo\nphases:\n  - {id: a, agent: noop}\n")
    two = tmp_path / "two.yaml"
    two.write_text("a: 1\n---\nb: 2\n")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \x00\n")
    expected = {
        tmp_path: [
            f"{tmp_path}:1:1: '{tmp_path}' is a directory, not an inputs file",
            "  hint: give the path of a YAML or JSON file",
        ],
        two: [
            f"{two}:2:1: the file holds more than one YAML document;"
            " an inputs file is one document",
            "  hint: remove the '---' line and what follows, or split the file",
        ],
        binary: [f"{binary}:1:4: the file is binary (it holds a NUL byte), not a YAML inputs file"],
    }
    for path, lines in expected.items():
        result = CliRunner().invoke(app, ["run", str(workflow), "--inputs-file", str(path)])
        assert result.exit_code == 2
        assert "Traceback" not in result.output
        assert result.output.splitlines()[-len(lines) :] == lines
