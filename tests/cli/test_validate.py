"""`orch validate`: the real command on real files, in every format, and the exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert result.output == f"{path}: ok (2 phases, 1 named agent, 1 agent type: echo)\n"


def test_every_problem_of_every_file_is_printed_and_exit_is_2(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    result = _run(good, bad)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{good}: ok (2 phases, 1 named agent, 1 agent type: echo)",
        f"{bad}:4:12: unknown agent 'ech'; did you mean 'echo'?",
        f"{bad}:5:14: phases[0].timeout: 'forever' is not a duration;"
        " use 500ms, 30s, 5m, 1h or a number of seconds",
        f"{bad}:8:18: unknown phase 'c' in depends_on",
        "  hint: known phases: a, b",
    ]


def test_missing_file_and_a_folder_without_workflows_are_located_problems(tmp_path):
    missing = tmp_path / "nope.yaml"
    (tmp_path / "notes.txt").write_text("not a workflow")
    result = _run(missing, tmp_path)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{tmp_path}:1:1: the folder '{tmp_path}' holds no .yaml or .yml files",
        "  hint: name the workflow files, or the folder that holds them",
        f"{missing}:1:1: no such file '{missing}'",
        "  hint: check the path and the spelling",
    ]


def test_a_folder_stands_for_its_yaml_and_yml_files_sorted_not_recursive(tmp_path):
    (tmp_path / "b.yml").write_text(GOOD)
    (tmp_path / "a.yaml").write_text(GOOD.replace("greeter", "hello"))
    (tmp_path / "c.yaml").write_text(BAD)
    (tmp_path / "readme.md").write_text("# not a workflow")
    (tmp_path / "deeper").mkdir()
    (tmp_path / "deeper" / "d.yaml").write_text(BAD)
    result = _run(tmp_path, tmp_path / "a.yaml")  # a file named twice is checked once
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{tmp_path / 'a.yaml'}: ok (2 phases, 1 named agent, 1 agent type: echo)",
        f"{tmp_path / 'b.yml'}: ok (2 phases, 1 named agent, 1 agent type: echo)",
        f"{tmp_path / 'c.yaml'}:4:12: unknown agent 'ech'; did you mean 'echo'?",
        f"{tmp_path / 'c.yaml'}:5:14: phases[0].timeout: 'forever' is not a duration;"
        " use 500ms, 30s, 5m, 1h or a number of seconds",
        f"{tmp_path / 'c.yaml'}:8:18: unknown phase 'c' in depends_on",
        "  hint: known phases: a, b",
    ]


def _orch_stdin(text: str, *args: str) -> subprocess.CompletedProcess[str]:
    orch = str(Path(sys.executable).parent / "orch")
    return subprocess.run([orch, "validate", *args], input=text, capture_output=True, text=True)


def test_a_dash_reads_the_workflow_from_standard_input():
    done = _orch_stdin(GOOD, "-")
    assert (done.returncode, done.stdout) == (
        0,
        "<stdin>: ok (2 phases, 1 named agent, 1 agent type: echo)\n",
    )
    done = _orch_stdin(BAD, "-", "--format", "github")
    assert done.returncode == 2
    assert done.stdout.splitlines()[0] == (
        "::error file=<stdin>,line=4,col=12::unknown agent 'ech'; did you mean 'echo'?"
    )


def test_standard_input_that_is_not_yaml_is_a_located_problem_not_a_traceback():
    done = _orch_stdin("phases: [\n", "-")
    assert done.returncode == 2
    assert done.stdout.startswith("<stdin>:2:1: ")
    assert "Traceback" not in done.stderr + done.stdout


def test_every_agent_type_used_is_counted_handlers_and_fallbacks_too(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: t\n"
        "agents:\n  slow: {type: sleep}\n"
        "phases:\n"
        "  - {id: a, agent: slow, with: {seconds: 0}, fallback: {agent: echo, with: {text: x}}}\n"
        "  - {id: b, agent: noop, compensate: {agent: echo}}\n"
        "on_failure:\n  - {id: c, agent: fail, with: {times: 0}}\n"
    )
    result = _run(path)
    assert result.output == (
        f"{path}: ok (2 phases, 1 named agent, 4 agent types: echo, fail, noop, sleep)\n"
    )


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


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


FAILING = "phases:\n  - {id: x, agent: fail}\n"


def test_an_invalid_fallback_workflow_is_reported_briefly_at_its_key(tmp_path):
    _write(tmp_path, "broken.yaml", "name: b\nphases:\n  - {id: x, agent: fial}\n  - {id: y}\n")
    main = _write(
        tmp_path,
        "main.yaml",
        "name: m\nerror_handling:\n  fallback_workflow: broken.yaml\n" + FAILING,
    )
    result = _run(main)
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (
        f"{main}:3:22: fallback workflow 'broken.yaml' is invalid: broken.yaml:3:20: "
        "unknown agent 'fial'; did you mean 'fail'? (and 1 more)"
    )
    assert "hint: run 'orch validate broken.yaml' to see every problem" in result.output
    _write(tmp_path, "broken.yaml", "name: b\n" + FAILING)
    assert _run(main).exit_code == 0


def test_recursion_through_a_fallback_and_a_sub_workflow_is_one_located_problem(tmp_path):
    main = _write(
        tmp_path, "a.yaml", "name: a\nerror_handling:\n  fallback_workflow: b.yaml\n" + FAILING
    )
    other = _write(
        tmp_path,
        "b.yaml",
        "name: b\nphases:\n  - id: back\n    agent: workflow\n    with: {path: a.yaml}\n",
    )
    result = _run(main)
    assert result.exit_code == 2
    assert result.output.strip() == f"{main}:3:22: workflow recursion: a.yaml -> b.yaml -> a.yaml"
    result = _run(other)
    assert result.output.strip() == f"{other}:5:18: workflow recursion: b.yaml -> a.yaml -> b.yaml"


CHILD = """\
name: child
inputs:
  n: {type: integer, required: true}
  label: {type: string}
phases:
  - {id: x, agent: noop}
"""


def test_literal_sub_workflow_inputs_are_checked_against_the_child(tmp_path):
    _write(tmp_path, "child.yaml", CHILD)
    parent = _write(
        tmp_path,
        "parent.yaml",
        """\
name: parent
inputs:
  who: {type: string, default: me}
phases:
  - id: a
    agent: workflow
    with: {path: child.yaml, inputs: {n: "abc", lable: x, label: "{{ inputs.who }}"}}
  - id: b
    agent: workflow
    with: {path: child.yaml, inputs: {label: x}}
  - id: ok
    agent: workflow
    with: {path: child.yaml, inputs: {n: 3, label: "{{ inputs.who }}"}}
""",
    )
    result = _run(parent)
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if not ln.startswith("  hint: ")]
    assert lines == [
        f"{parent}:7:42: input 'n' of sub-workflow 'child.yaml' must be an integer, "
        "not the string 'abc'",
        f"{parent}:7:56: unknown input 'lable' of sub-workflow 'child.yaml'; did you mean 'label'?",
        f"{parent}:10:38: missing required input 'n' (integer) of sub-workflow 'child.yaml'",
    ]
    assert "Traceback" not in result.output


def test_templated_recursion_passes_validate_and_run_stops_it_with_one_line(tmp_path):
    loop = _write(
        tmp_path,
        "loop.yaml",
        "name: l\ninputs:\n  me: {type: string, default: loop.yaml}\nphases:\n"
        "  - id: again\n    agent: workflow\n    with: {path: '{{ inputs.me }}'}\n",
    )
    assert _run(loop).exit_code == 0
    result = CliRunner().invoke(app, ["run", str(loop)])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: phase 'again' failed: sub-workflow recursion: loop.yaml -> loop.yaml -> ... "
        "nests deeper than 8 runs"
    ]
    assert "sub-workflow 'loop.yaml' failed" not in result.output  # not wrapped per level


def test_a_plugin_shadowing_a_built_in_type_is_reported_once_per_file(tmp_path):
    from tests.agents.test_registry import GOOD, make_site
    from tests.cli.test_agents import orch_process

    site = make_site(
        tmp_path / "site",
        {"shadow-tools-0.9": ("", {"shell": "reg_good:Hello"})},
        {"reg_good": GOOD},
    )
    flow = _write(
        tmp_path,
        "flow.yaml",
        "name: f\nphases:\n"
        + "".join(f"  - {{id: p{i}, agent: shell, with: {{command: 'true'}}}}\n" for i in range(7)),
    )
    result = orch_process("validate", str(flow), pythonpath=site)
    assert result.returncode == 2
    out = result.stdout + result.stderr
    assert out.count("registered by two distributions") == 1
    assert f"{flow}:3:" in out
    assert "Traceback" not in out


def test_cache_on_a_handoff_phase_is_a_located_warning(tmp_path):
    wf = tmp_path / "ho.yaml"
    wf.write_text(
        """name: ho
agents:
  a: {type: echo}
  b: {type: echo}
phases:
  - id: talk
    handoff: {start: a, agents: [a, b], max_turns: 2}
    cache: true
    with: {text: hi}
"""
    )
    result = _run(wf)
    assert result.exit_code == 0
    assert (
        f"{wf}:8:5: warning: phase 'talk': cache does not apply to a handoff phase" in result.output
    )
    assert "1 warning" in result.output


# -- the fast path (cli/fast.py: no typer) prints what typer's command prints ---------------

TYPER = "import sys\nfrom orchestrator.cli import main\nsys.argv = ['orch', *sys.argv[1:]]\nmain()"


def _both(cwd: Path, *args: str, stdin: str = "") -> tuple[tuple[int, str, str], ...]:
    """(exit code, stdout, stderr) of the real `orch validate ARGS` and of typer's command."""
    orch = str(Path(sys.executable).parent / "orch")
    runs = []
    for argv in ([orch, "validate", *args], [sys.executable, "-c", TYPER, "validate", *args]):
        done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True)
        runs.append((done.returncode, done.stdout, done.stderr))
    return tuple(runs)


def test_the_fast_path_answers_exactly_as_typer_in_every_form(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "a.yml").write_text(GOOD)
    (tmp_path / "-odd.yaml").write_text(GOOD)
    forms = [
        ["good.yaml"],
        ["good.yaml", "bad.yaml", "missing.yaml", "flows"],
        ["--format", "json", "bad.yaml"],
        ["--format=JSON", "good.yaml", "bad.yaml"],
        ["-f", "github", "bad.yaml"],
        ["-fgithub", "good.yaml"],
        ["bad.yaml", "-f", "text"],
        ["--", "-odd.yaml"],
        ["-f", "xml", "good.yaml"],  # typer's usage errors from here on
        ["--bogus", "good.yaml"],
        ["-f", "json", "-f", "text", "good.yaml"],
        ["-f"],
        [],
    ]
    for form in forms:
        fast, typer_ = _both(tmp_path, *form)
        assert fast == typer_, form
        assert "Traceback" not in fast[2], form
    fast, typer_ = _both(tmp_path, "-", "good.yaml", stdin=BAD)
    assert fast == typer_
    assert fast[0] == 2 and "<stdin>:4:" in fast[1] and "good.yaml: ok" in fast[1]


def _validate_file(tmp_path: Path, text: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`orch validate` of a file holding ``text`` that has problems: the file, the command."""
    path = tmp_path / "w.yaml"
    path.write_text(text)
    done = _orch_stdin("", str(path))
    assert done.returncode == 2, done.stdout
    return path, done


def test_a_one_of_that_is_not_a_list_is_said_so_and_its_select_is_still_checked(tmp_path):
    path, done = _validate_file(
        tmp_path,
        "name: choose\n"
        "inputs:\n  tier: {type: string, default: cheap}\n"
        "agents:\n  cheap: {type: echo}\n"
        "phases:\n"
        "  - id: a\n"
        '    agent: {one_of: cheap, select: "{{ inputs.nope }}"}\n'
        "  - id: b\n"
        "    agent:\n"
        "      one_of: [cheap]\n"
        '      select: "{{ phases.zz.output }}"\n',
    )
    assert done.stdout.splitlines() == [
        f"{path}:8:21: phases[0].agent.one_of must be a list of agent names,"
        " not the string 'cheap'",
        "  hint: write one_of: [cheap]",
        f"{path}:8:36: unknown input 'nope' in phases[0].agent.select",
        "  hint: known inputs: tier",
        f"{path}:12:15: unknown phase 'zz' in phases[1].agent.select",
        "  hint: known phases: a, b",
    ]


def _orch_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    orch = str(Path(sys.executable).parent / "orch")
    return subprocess.run(
        [orch, "validate", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


EMPTY_PATH = [
    "error: an empty path names no workflow file (an unset variable in a script?)",
    "  hint: give a file, a folder, a NAME or - (standard input); for this folder give .",
]


def test_an_empty_path_is_an_error_not_the_current_folder(tmp_path):
    # `orch validate "$FILE"` with FILE unset must not validate whatever is here
    (tmp_path / "good.yaml").write_text(GOOD)
    for args in ([""], ["", "good.yaml"], ["--", ""], ["", "-f", "json", "-f", "text"]):
        done = _orch_in(tmp_path, *args)  # the last one is typer's path, not the fast one
        assert done.returncode == 2, args
        assert done.stderr.splitlines() == EMPTY_PATH, args
        assert done.stdout == "", args
    here = _orch_in(tmp_path, ".")  # the current folder, when it is meant
    assert here.returncode == 0, here.stdout
    assert here.stdout.startswith("good.yaml: ok")


def test_a_dangling_symlink_in_a_folder_is_reported_not_skipped(tmp_path):
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "good.yaml").write_text(GOOD)
    (folder / "x.yaml").symlink_to("gone.yaml")
    done = _orch_in(tmp_path, "flows")
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "flows/good.yaml: ok (2 phases, 1 named agent, 1 agent type: echo)",
        "flows/x.yaml:1:1: 'flows/x.yaml' is a symbolic link to 'gone.yaml', which does not exist",
        "  hint: fix or remove the link",
    ]


def test_a_zero_timeout_in_the_with_of_an_http_or_llm_agent_is_refused_at_validate(tmp_path):
    """The agent refuses it when the call is made: validate said ok, the run then failed."""
    path, done = _validate_file(
        tmp_path,
        "name: t\nphases:\n"
        "  - {id: a, agent: http, with: {url: 'http://h', timeout: 0}}\n"
        "  - {id: b, agent: llm, with: {prompt: p, model: m, timeout: 0ms}}\n"
        "  - {id: c, agent: llm, with: {prompt: p, model: m, timeout: 0.5s}}\n",
    )
    assert done.stdout.splitlines() == [
        f"{path}:3:59: phases[0].with.timeout: a duration must be greater than 0, not 0",
        "  hint: leave the key out for the default",
        f"{path}:4:62: phases[1].with.timeout: a duration must be greater than 0, not '0ms'",
        "  hint: leave the key out for the default",
    ]


def test_a_plain_text_file_is_shown_by_its_start_not_echoed_whole(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" + "daemon:x:1:1:daemon:/usr/sbin\n" * 8000)
    for command in ("validate", "run", "graph"):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", command, str(text)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        said = proc.stdout + proc.stderr
        assert "Traceback" not in said
        assert (
            f"{text}:1:1: a workflow must be a mapping of keys (name, phases, ...), not the single"
            " value 'root:x:0:0:root:/root:/bin/bash daemon:x:1:1:daemon:/usr/...'"
        ) in said, said
        assert len(said) < 1000, (command, len(said))  # not the 250 KB file again
