"""Arguments that name nothing usable get one clear line and exit 2, through the real `orch`:
an empty run id (an unset ``$RUN`` in a script), ``-`` for a workflow outside `orch validate`,
and a workflows folder `orch serve` cannot reach.
"""

from __future__ import annotations

from tests.unprivileged import run_orch, run_unprivileged, shut_folder

WORKFLOW = "name: w\nphases:\n  - id: a\n    agent: echo\n    with: {text: hi}\n"


def test_an_empty_run_id_is_refused_by_every_command_that_takes_one(tmp_path):
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    assert run_orch(["run", "wf.yaml", "--state-dir", "st"], tmp_path).returncode == 0
    empty = (
        "error: the run id '' is empty: it names no run (an unset variable in a script?)\n"
        "  hint: `orch runs` lists the recorded runs\n"
    )
    for args in (
        ["status", ""],
        ["logs", ""],
        ["resume", ""],
        ["cancel", ""],
        ["wait", ""],
        ["report", ""],
        ["approve", "", "a"],
        ["reject", "", "a"],
    ):
        for folder in ("st", "nothing-here"):  # a store with a run, and none
            res = run_orch([*args, "--state-dir", folder], tmp_path)
            assert (res.returncode, res.stderr) == (2, empty), (args, folder, res.stderr)
    assert not (tmp_path / "nothing-here").exists()


def test_a_workflow_from_standard_input_is_refused_outside_validate(tmp_path):
    refused = (
        "error: only `orch validate` reads a workflow from standard input ('-'): a run is"
        " recorded with its workflow file, which `orch resume` reads again\n"
        "  hint: save the workflow to a file and give its path\n"
    )
    for args in (["run", "-"], ["run", "-", "--dry-run"], ["graph", "-"]):
        res = run_orch([*args], tmp_path, stdin=WORKFLOW)
        assert (res.returncode, res.stderr, res.stdout) == (2, refused, ""), args
    assert not (tmp_path / ".orch").exists()  # nothing recorded
    res = run_orch(["validate", "-"], tmp_path, stdin=WORKFLOW)  # validate does read it
    assert res.returncode == 0, res.stderr
    (tmp_path / "-").write_text(WORKFLOW)  # a file called '-' is a file
    res = run_orch(["run", "-", "--state-dir", "st"], tmp_path)
    assert res.returncode == 0, res.stderr


def test_a_workflows_folder_orch_serve_cannot_reach_is_named(shared_dir):
    (shared_dir / "afile").write_text("not a folder\n")
    (shared_dir / "afile").chmod(0o644)
    hint = "  hint: pass --workflows DIR (or set ORCH_WORKFLOWS)\n"
    # a path through a file (root too), a folder above it or the folder itself this user
    # cannot open, one that does not exist: given by --workflows or $ORCH_WORKFLOWS
    # alike, orch's own one-line message and hint (not typer's wording, not a traceback)
    cases = [  # (path, unprivileged, why)
        ("shut", True, "this user cannot open the folder 'shut' (permission denied)"),
        ("locked/flows", True, "this user cannot open the folder 'locked' (permission denied)"),
        ("afile/flows", False, "'afile' is a file, not a folder"),
        ("nowhere", False, "'nowhere' does not exist"),
    ]
    with shut_folder(shared_dir / "shut"), shut_folder(shared_dir / "locked"):
        for command in ("serve", "schedule"):
            for path, unprivileged, why in cases:
                for args, env in (([], {"ORCH_WORKFLOWS": path}), (["--workflows", path], {})):
                    run = run_unprivileged if unprivileged else run_orch
                    res = run([command, *args], shared_dir, env)
                    assert (res.returncode, res.stderr) == (
                        2,
                        f"error: the workflows folder '{path}' cannot be used: {why}\n" + hint,
                    ), (command, args, env)
