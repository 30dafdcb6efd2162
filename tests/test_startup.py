"""Start-up: each command imports what it needs (checked in sys.modules of a real process).

The figures themselves (ratios to `python -c pass`) live in bench/startup_bench.py:
wall-clock thresholds have no place in a suite run on a shared machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orchestrator.__main__ as entry

ROOT = Path(__file__).resolve().parents[1]
ORCH = str(Path(sys.executable).parent / "orch")

PROBE = """
import json, sys
sys.argv = ["orch", *json.loads(sys.argv[1])]
from orchestrator.__main__ import main
try:
    main()
except SystemExit:
    pass
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules(*args: str, cwd: Path = ROOT) -> set[str]:
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=cwd, env=env, capture_output=True, text=True,
    )  # fmt: skip
    line = done.stderr.rsplit("MODULES ", 1)[1]
    return {name.split(".")[0] for name in json.loads(line)} | set(json.loads(line))


def _help(columns: str, fast: bool) -> str:
    env = {**os.environ, "COLUMNS": columns}
    if not fast:
        env["ORCH_NO_FAST_HELP"] = "1"
    done = subprocess.run([ORCH, "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_orch_help_needs_neither_typer_nor_the_engine():
    loaded = _modules("--help")
    assert not loaded & {"typer", "click", "rich", "jinja2", "ruamel", "orchestrator.cli"}


def test_orch_version_needs_neither_typer_nor_the_distribution_metadata():
    from importlib.metadata import version

    loaded = _modules("--version")
    assert not loaded & {"typer", "click", "orchestrator.cli", "importlib.metadata", "email"}
    done = subprocess.run([ORCH, "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, f"orch {version('orch-workflows')}\n")
    # with other arguments typer answers, with the same version
    typer = subprocess.run([ORCH, "--version", "runs"], capture_output=True, text=True)
    assert (typer.returncode, typer.stdout) == (0, done.stdout)


def test_the_fast_help_is_what_typer_prints_at_every_width():
    for columns in ("80", "120", "60"):  # 60: typer answers (it wraps narrower)
        assert _help(columns, fast=True) == _help(columns, fast=False), columns


def test_a_stale_help_text_is_not_used(tmp_path, monkeypatch):
    stale = tmp_path / "help.txt"
    stale.write_text("checksum 00000000\nUsage: orch [OLD]\n")
    monkeypatch.setattr(entry, "HELP_FILE", str(stale))
    monkeypatch.setenv("COLUMNS", "100")
    assert entry.fast_help() is None
    stale.write_text(f"checksum {entry.cli_checksum()}\nUsage: orch [CURRENT]\n")
    assert entry.fast_help() == "Usage: orch [CURRENT]\n"


def test_validating_a_good_file_imports_neither_jsonschema_nor_importlib_metadata():
    loaded = _modules("validate", "workflows/demo.yaml")
    assert "orchestrator.spec" in loaded  # it did validate
    assert not loaded & {"jsonschema", "importlib.metadata", "asyncio", "httpx", "rich"}


def test_jsonschema_explains_a_bad_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\nphases:\n  - {id: a, agent: echo, tmeout: 1}\n")
    assert "jsonschema" in _modules("validate", "bad.yaml", cwd=tmp_path)


def test_validating_a_plain_file_needs_neither_typer_nor_jinja2():
    # a pre-commit hook runs it on every commit: cli/fast.py answers without typer, and
    # templates of the plain shapes ({{ a.b }}, {{ index + 1 }}) are read without Jinja
    loaded = _modules("validate", "workflows/demo.yaml", "--format", "text")
    assert "orchestrator.spec" in loaded
    assert not loaded & {"typer", "click", "jinja2", "orchestrator.cli.root"}


def test_a_template_that_needs_jinja_still_gets_it(tmp_path):
    (tmp_path / "w.yaml").write_text(
        "name: x\nphases:\n  - {id: a, agent: echo, with: {text: \"{{ 'x' ~ 1 }}\"}}\n"
    )
    assert "jinja2" in _modules("validate", "w.yaml", cwd=tmp_path)
