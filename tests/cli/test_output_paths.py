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
