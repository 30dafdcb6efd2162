"""A state folder orch cannot use is one clear line on every command that takes --state-dir.

A path through a file (root hits it too) and a folder this user cannot open (a folder
above it, or the state folder itself, with mode 000: run as an unprivileged user, since
permission bits do not stop root) exit 2 naming the folder, never with a traceback, on
every command: the one check is ``state.sqlite.check_state_folder``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.unprivileged import run_orch, run_unprivileged, shut_folder

WORKFLOW = "name: w\nphases:\n  - id: a\n    agent: echo\n    with: {text: hi}\n"

#: Every command that takes --state-dir, with its other arguments.
COMMANDS = [
    ["runs"],
    ["status", "r1"],
    ["logs", "r1"],
    ["resume", "r1"],
    ["cancel", "r1"],
    ["wait", "r1"],
    ["stats"],
    ["report", "r1"],
    ["cache", "clear"],
    ["approve", "r1", "a"],
    ["reject", "r1", "a"],
    ["run", "wf.yaml"],
    ["run", "wf.yaml", "--dry-run"],
    ["run", "wf.yaml", "--detach"],
    ["serve", "--port", "0", "--workflows", "flows"],
]
HINT = (
    "  hint: the state directory (--state-dir, ORCH_STATE_DIR) must be a directory"
    " this user can open\n"
)


def _folder(where: Path) -> None:
    (where / "wf.yaml").write_text(WORKFLOW)
    (where / "flows").mkdir()
    (where / "flows" / "wf.yaml").write_text(WORKFLOW)
    (where / "afile").write_text("not a folder\n")
    for path in (where / "wf.yaml", where / "flows" / "wf.yaml", where / "afile"):
        path.chmod(0o644)
    (where / "flows").chmod(0o755)


def test_a_state_folder_under_a_file_is_named_on_every_command(tmp_path):
    _folder(tmp_path)
    given = [(args, ["--state-dir", "afile/state"], {}) for args in COMMANDS]
    env = {"ORCH_STATE_DIR": "afile/state"}  # checked as the option is
    given += [(["runs"], [], env), (["run", "wf.yaml"], [], env)]
    for args, option, extra in given:
        res = run_orch([*args, *option], tmp_path, extra)
        assert "Traceback" not in res.stderr, (args, res.stderr)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr == (
            "error: cannot use the state folder 'afile/state': 'afile' is a file, not a folder\n"
            + HINT
        ), args
        assert res.stdout == "", args  # nothing shown before the check: no plan, no run id
    assert (tmp_path / "afile").read_text() == "not a folder\n"


def test_a_state_folder_this_user_cannot_open_is_named_on_every_command(shared_dir):
    _folder(shared_dir)
    (shared_dir / "locked" / "state").mkdir(parents=True)
    given = [(args, "locked/state", "locked") for args in COMMANDS]
    shut = (["runs"], ["status", "r1"], ["run", "wf.yaml"])  # the state folder itself
    given += [(args, "shut", "shut") for args in shut]
    with shut_folder(shared_dir / "locked"), shut_folder(shared_dir / "shut"):
        for args, folder, blocked in given:
            res = run_unprivileged([*args, "--state-dir", folder], shared_dir)
            assert "Traceback" not in res.stderr, (args, res.stderr)
            assert res.returncode == 2, (args, res.stderr)
            assert res.stderr == (
                f"error: cannot use the state folder '{folder}': this user cannot open"
                f" the folder '{blocked}' (permission denied)\n" + HINT
            ), args
    assert os.listdir(shared_dir / "locked" / "state") == []
    assert os.listdir(shared_dir / "shut") == []


def test_every_command_that_takes_state_dir_declares_it_the_same_way():
    """One --state-dir: the same help, metavar and parser on every command (an empty
    value exits 2 everywhere), and every command that reads or records runs has it."""
    import typer.main

    from orchestrator.cli import app

    found: dict[str, tuple[object, ...]] = {}

    def walk(command: object, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        for param in getattr(command, "params", []):
            if "--state-dir" in param.opts:
                found[" ".join(path)] = (param.help, param.metavar, param.type.func)

    walk(typer.main.get_command(app), [])
    names = {" ".join(args[:2]) if args[0] == "cache" else args[0] for args in COMMANDS}
    assert set(found) == names  # COMMANDS (every command the tests above try) is complete
    assert len(set(found.values())) == 1, found
    ((help_text, metavar, _),) = set(found.values())
    assert (help_text, metavar) == (
        "Where runs are recorded (default: $ORCH_STATE_DIR, else .orch).",
        "DIR",
    )
