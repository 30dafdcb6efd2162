"""Shared test setup.

Every test records its runs in its own state directory, never in ./.orch; and
every event that a test's runs stored is checked against the published event
contract (schemas/event.schema.json) when the test ends: the store is read as
``orch logs`` reads it, so what is validated is what users and tools receive.
A test that writes hand-made or deliberately broken records into a store opts
out with ``@pytest.mark.handmade_events``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, settings

from orchestrator.events import Event
from tests.processes import Processes

# Property tests judge answers, never speed: no per-example deadline and no "input
# generation is slow" check (both are wall-clock thresholds, and failed on a loaded
# machine). A test's own @settings adds to this.
settings.register_profile(
    "orch", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("orch")

# pytest imports readline before this file (_pytest.capture), and GNU readline exports
# COLUMNS=80 and LINES=24 into the process's C environment: os.environ does not show them,
# but every process started without an explicit env (pytest-xdist's workers, and so every
# os.environ of theirs) got them, and `orch` then cut its tables at 80 columns. The
# processes the tests start get the user's environment as it is.
for _name in ("COLUMNS", "LINES"):
    if _name not in os.environ:
        os.unsetenv(_name)

EVENT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "event.schema.json"
_validator: jsonschema.Draft202012Validator | None = None


def event_validator() -> jsonschema.Draft202012Validator:
    """The compiled validator of schemas/event.schema.json (built once per session)."""
    global _validator
    if _validator is None:
        schema = json.loads(EVENT_SCHEMA.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        _validator = jsonschema.Draft202012Validator(schema)
    return _validator


def stored_events(folder: Path) -> list[tuple[Path, dict]]:
    """Every event stored in a state.db under ``folder``, as the contract's JSON objects.

    Stores that cannot be read (tests that corrupt them on purpose) and rows whose
    data is not JSON (the same) are the store's own business: they are left out.
    """
    found: list[tuple[Path, dict]] = []
    for db in sorted(folder.rglob("state.db")):
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                rows = conn.execute(
                    "SELECT run_id, ts, event, phase, attempt, data FROM events ORDER BY seq"
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            continue
        for run_id, ts, kind, phase, attempt, data in rows:
            try:
                payload = json.loads(data) if data else {}
            except ValueError:
                continue
            if isinstance(payload, dict):
                found.append((db, Event(kind, run_id, ts, phase, attempt, payload).as_dict()))
    return found


def check_events(folder: Path) -> list[str]:
    """One message per stored event under ``folder`` that breaks the event schema."""
    problems = []
    validator = event_validator()
    for db, event in stored_events(folder):
        for error in validator.iter_errors(event):
            where = "/".join(str(p) for p in error.absolute_path) or "(event)"
            shown = json.dumps(event, default=str)[:300]
            problems.append(f"{db}: {shown}\n  at {where}: {error.message}")
    return problems


# `browser_page`: a real headless chromium (tests/browser.py), for any test that asks for it.
pytest_plugins = ["tests.browser"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder an unprivileged user can read (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="orch-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start processes (and adopt detached runs) that end with the test, whatever its outcome."""
    started = Processes()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(autouse=True)
def _isolated_state_dir(tmp_path_factory, monkeypatch, request):
    """``orch run`` records every run; point ORCH_STATE_DIR at a fresh folder per test.

    When the test ends, every event its runs stored (there and under its tmp_path)
    must validate against schemas/event.schema.json.
    """
    state = tmp_path_factory.mktemp("orch-state")
    monkeypatch.setenv("ORCH_STATE_DIR", str(state))
    yield
    if request.node.get_closest_marker("handmade_events"):
        return
    folders = [state]
    tmp = request.node.funcargs.get("tmp_path")
    if isinstance(tmp, Path):
        folders.append(tmp)
    problems = [p for folder in folders for p in check_events(folder)]
    if problems:
        pytest.fail(
            f"{len(problems)} stored event(s) break schemas/event.schema.json:\n"
            + "\n".join(problems[:10]),
            pytrace=False,
        )
