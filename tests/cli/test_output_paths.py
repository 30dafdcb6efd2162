"""Paths orch writes on a user's word (X9): only a new path or a regular file is written.

A symlink (its target would be rewritten), a device (as root ``/dev/null`` would
become a regular file), a FIFO, a socket or a folder is refused with exit 2
before anything runs, and left exactly as it was. The real `orch` command runs.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.unprivileged import run_unprivileged, shut_folder

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))


def _workflow(tmp_path: Path, command: str = "true") -> tuple[Path, Path]:
    ledger = tmp_path / "ledger"
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: w\nphases:\n"
        f"  - {{id: a, agent: shell, with: {{command: \"echo ran >> '{ledger}'; {command}\"}}}}\n",
        encoding="utf-8",
    )
    return wf, ledger


def _refused(tmp_path: Path, target: Path, what: str) -> None:
    wf, ledger = _workflow(tmp_path)
    res = runner.invoke(app, ["run", str(wf), "--output-file", str(target)])
    assert res.exit_code == 2, res.output
    assert f"error: --output-file '{target}' is {what}, not a regular file" in res.stderr
    assert "Traceback" not in res.output
    assert not ledger.exists()  # refused before anything ran


def test_a_symlink_is_refused_and_its_target_is_not_rewritten(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    _refused(tmp_path, link, "a symbolic link")
    assert target.read_text() == "keep me\n"
    assert link.is_symlink() and os.readlink(link) == str(target)


def test_a_dangling_symlink_is_refused_and_nothing_is_created(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "nowhere.json")
    _refused(tmp_path, link, "a symbolic link")
    assert not (tmp_path / "nowhere.json").exists()


def test_a_device_is_refused_and_stays_a_device(tmp_path):
    # As root, a null device of the test's own (never the machine's /dev/null: an orch
    # without this check would replace it); otherwise /dev/null, which only root could harm.
    device = Path("/dev/null")
    if os.geteuid() == 0:
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    before = os.stat(device)
    assert stat.S_ISCHR(before.st_mode)
    _refused(tmp_path, device, "a device")
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_a_fifo_is_refused_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    _refused(tmp_path, fifo, "a named pipe (FIFO)")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_socket_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative path: AF_UNIX paths are limited to ~100 bytes
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind("s.sock")
        _refused(tmp_path, Path("s.sock"), "a socket")
        assert stat.S_ISSOCK(os.lstat("s.sock").st_mode)
    finally:
        sock.close()


def test_a_symlink_made_during_the_run_is_refused_at_write_time(tmp_path):
    # The phase itself turns the output path into a link after the start-up check.
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    out = tmp_path / "out.json"
    wf, ledger = _workflow(tmp_path, f"ln -s '{target}' '{out}'")
    res = runner.invoke(app, ["run", str(wf), "--output-file", str(out)])
    assert res.exit_code == 2, res.output
    assert "is a symbolic link, not a regular file" in res.stderr
    assert ledger.read_text() == "ran\n"
    assert target.read_text() == "keep me\n" and out.is_symlink()


def test_a_regular_file_is_replaced_and_a_new_path_created(tmp_path):
    wf, _ = _workflow(tmp_path)
    out = tmp_path / "out.json"
    out.write_text("old\n")
    hard = tmp_path / "hard.json"
    os.link(out, hard)  # another name of the old file keeps the old content
    res = runner.invoke(app, ["run", str(wf), "--output-file", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text()) == {}
    assert hard.read_text() == "old\n"
    new = tmp_path / "new.json"
    res = runner.invoke(app, ["run", str(wf), "--output-file", "new.json"])
    assert res.exit_code == 0, res.output
    assert json.loads(new.read_text()) == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new.json")] == []


def test_every_file_option_is_checked_the_same_way(tmp_path):
    # --junit (and any later option naming a file to write) goes through the same check.
    target = tmp_path / "precious.xml"
    target.write_text("keep me\n")
    link = tmp_path / "report.xml"
    link.symlink_to(target)
    wf, ledger = _workflow(tmp_path)
    res = runner.invoke(app, ["run", str(wf), "--junit", str(link)])
    assert res.exit_code == 2, res.output
    assert f"error: --junit '{link}' is a symbolic link, not a regular file" in res.stderr
    assert target.read_text() == "keep me\n" and not ledger.exists()


def test_written_files_get_the_mode_a_plain_open_gives_or_keep_the_one_they_replace(tmp_path):
    # a CI artifact (report, JUnit XML, outputs) another user or a web server reads
    wf, _ = _workflow(tmp_path)
    old = os.umask(0o022)
    try:
        junit = tmp_path / "junit.xml"
        outputs = tmp_path / "out.json"
        outputs.write_text("{}")
        outputs.chmod(0o640)  # replaced: keeps its mode
        res = runner.invoke(
            app, ["run", str(wf), "--junit", str(junit), "--output-file", str(outputs)]
        )
        assert res.exit_code == 0, res.output
        run_id = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)[0]["id"]
        report = tmp_path / "report.html"
        assert runner.invoke(app, ["report", run_id, "-o", str(report)]).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(junit.stat().st_mode) == 0o644
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert stat.S_IMODE(outputs.stat().st_mode) == 0o640
    assert json.loads(outputs.read_text()) == {}  # the run's outputs (it has none)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".orch"]


def test_a_folder_given_for_a_file_gets_a_hint_naming_a_file_of_its_kind(tmp_path):
    wf, ledger = _workflow(tmp_path)
    (tmp_path / "out").mkdir()
    for option, example in (("--junit", "junit.xml"), ("--output-file", "outputs.json")):
        res = runner.invoke(app, ["run", str(wf), option, "out"])
        assert res.exit_code == 2, res.output
        assert res.stderr == (
            f"error: {option} 'out' is a directory, not a file\n"
            f"  hint: name a file inside it, e.g. {option} 'out/{example}'\n"
        )
    assert not ledger.exists()


def test_a_path_through_a_file_names_the_file_for_every_path_option(tmp_path):
    wf, ledger = _workflow(tmp_path)
    (tmp_path / "afile").write_text("keep me\n")
    expected = {
        "--output-file": "error: --output-file 'afile/out.json' cannot be written: 'afile'"
        " is a file, not a folder\n  hint: choose a path in a folder you can write to\n",
        "--junit": "error: --junit 'afile/out.json' cannot be written: 'afile'"
        " is a file, not a folder\n  hint: choose a path in a folder you can write to\n",
        "--record": "error: --record afile/out.json: 'afile' is a file, not a folder\n"
        "  hint: --record names a folder (a new one, or one --record made) to store the calls in\n",
        "--replay": "error: --replay afile/out.json: 'afile' is a file, not a folder\n"
        "  hint: record the calls with `orch run FILE --record DIR` and replay DIR\n",
    }
    for option, message in expected.items():
        res = runner.invoke(app, ["run", str(wf), option, "afile/out.json"])
        assert res.exit_code == 2, (option, res.output)
        assert res.stderr == message, option
    res = runner.invoke(app, ["run", str(wf), "--record", "afile"])  # --record takes a folder
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: --record afile: 'afile' is a file, not a folder\n")
    assert (tmp_path / "afile").read_text() == "keep me\n"
    assert not ledger.exists()  # refused before anything ran


def test_a_path_in_a_folder_this_user_cannot_open_is_refused_by_name(shared_dir):
    (shared_dir / "wf.yaml").write_text("name: w\nphases:\n  - {id: a, agent: echo}\n")
    (shared_dir / "wf.yaml").chmod(0o644)
    blocked = "this user cannot open the folder 'locked' (permission denied)"
    with shut_folder(shared_dir / "locked"):
        for option, path, line in (
            (
                "--output-file",
                "locked/x",
                f"error: --output-file 'locked/x' cannot be written: {blocked}",
            ),
            ("--junit", "locked/x", f"error: --junit 'locked/x' cannot be written: {blocked}"),
            ("--record", "locked/x", f"error: --record locked/x: {blocked}"),
            ("--replay", "locked/x", f"error: --replay locked/x: {blocked}"),
            # the folder of calls itself
            ("--record", "locked", f"error: --record locked: {blocked}"),
            ("--replay", "locked", f"error: --replay locked: {blocked}"),
        ):
            res = run_unprivileged(
                ["run", "wf.yaml", option, path, "--state-dir", "st"], shared_dir
            )
            assert "Traceback" not in res.stderr, (option, path, res.stderr)
            assert res.returncode == 2, (option, path, res.stderr)
            assert res.stderr.startswith(line + "\n"), (option, path, res.stderr)
    assert not (shared_dir / "st").exists()  # refused before anything was recorded


def test_a_file_this_user_may_write_but_not_read_is_written_by_every_option(shared_dir):
    # an output is only written: a file of mode 200 is no reason to refuse it (typer's
    # own Path check said "Path 'out/o.json' is not readable" before orch's ran)
    (shared_dir / "wf.yaml").write_text(
        "name: w\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
        "outputs:\n  said: '{{ phases.a.output }}'\n"
    )
    (shared_dir / "wf.yaml").chmod(0o644)
    out = shared_dir / "out"
    out.mkdir()
    out.chmod(0o777)  # the unprivileged user writes the store and replaces the files here
    names = ("o.json", "j.xml", "p.html")
    for name in names:
        (out / name).write_text("old\n")
        if os.geteuid() == 0:  # run_unprivileged runs as nobody: its own file
            os.chown(out / name, 65534, 65534)
        (out / name).chmod(0o200)
    res = run_unprivileged(
        ["run", "wf.yaml", "--output-file", "out/o.json", "--junit", "out/j.xml"]
        + ["--state-dir", "out/st"],
        shared_dir,
    )
    assert res.returncode == 0, res.stderr
    run_id = res.stderr.split("(run ", 1)[1].split(",", 1)[0]
    page = run_unprivileged(
        ["report", run_id, "-o", "out/p.html", "--state-dir", "out/st"], shared_dir
    )
    assert page.returncode == 0, page.stderr
    assert page.stderr == "wrote out/p.html\n"
    for name in names:
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o200  # kept, as any replaced file's
        (out / name).chmod(0o600)
    assert json.loads((out / "o.json").read_text()) == {"said": "hi"}
    assert (out / "j.xml").read_text().startswith('<?xml version="1.0"')
    assert (out / "p.html").read_text().startswith("<!")
