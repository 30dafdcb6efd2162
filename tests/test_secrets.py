"""X7: a workflow that tries every way to leak a secret; not one occurrence anywhere.

Anywhere: stdout and stderr of `orch run` (plain lines and --events jsonl), the
--output-file report, `orch logs`/`status`/`runs`, and every file of the state
directory (the database with its WAL, spilled outputs), in the exact, base64,
URL-encoded and JSON-escaped forms, for a long, a short and a multiline secret.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import urllib.parse

import pytest

from orchestrator.engine import RunOptions, run_sync
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow

SECRETS = {
    "LONG_SECRET": "Sup3r-S3cret/Value+With=Chars&more?x=1",
    "SHORT_SECRET": "q7Z",
    "MULTI_SECRET": "line-one-XYZ\nline-two-QRS",
}

MODULE = """
import base64, urllib.parse

async def stream(secret, ctx):
    for i in range(0, len(secret), 3):  # split across writes
        await ctx.stream(secret[i:i + 3])
    return "streamed"

def encoded(secret):
    raw = secret.encode()
    return {
        "b64": base64.b64encode(raw).decode(),
        "b64url": base64.urlsafe_b64encode(raw).decode(),
        "url": urllib.parse.quote(secret, safe=""),
        "plus": urllib.parse.quote_plus(secret),
        "nested": [{"deep": secret}],
        secret: "the secret as a key",
    }

def boom(secret):
    raise RuntimeError("could not log in with " + secret)

def big(secret):
    return (secret + "|") * 20000  # spills to a file in the state directory
"""

WORKFLOW = """
name: leaky
phases:
  - id: plain
    agent: echo
    cache: true
    with: {text: "{{ secrets.LONG_SECRET }} {{ secrets.SHORT_SECRET }} {{ secrets.MULTI_SECRET }}"}
  - id: streamed
    agent: python
    with: {function: "leaky:stream", kwargs: {secret: "{{ secrets.LONG_SECRET }}"}}
  - id: streamed_multi
    agent: python
    with: {function: "leaky:stream", kwargs: {secret: "{{ secrets.MULTI_SECRET }}"}}
  - id: enc_long
    agent: python
    with: {function: "leaky:encoded", kwargs: {secret: "{{ secrets.LONG_SECRET }}"}}
  - id: enc_multi
    agent: python
    with: {function: "leaky:encoded", kwargs: {secret: "{{ secrets.MULTI_SECRET }}"}}
  - id: error
    agent: python
    continue_on_error: true
    with: {function: "leaky:boom", kwargs: {secret: "{{ secrets.LONG_SECRET }}"}}
  - id: retried
    agent: fail
    continue_on_error: true
    retries: {attempts: 1, delay: 10ms, backoff: fixed}
    with: {message: "token {{ secrets.LONG_SECRET }} rejected", times: 5}
  - id: big
    agent: python
    with: {function: "leaky:big", kwargs: {secret: "{{ secrets.LONG_SECRET }}"}}
  - id: url_filter
    agent: echo
    with: {text: "{{ secrets.LONG_SECRET | urlencode }}"}
outputs:
  direct: "{{ secrets.LONG_SECRET }}"
  encoded: "{{ phases.enc_long.output }}"
  error: "{{ phases.error.error }}"
finally:
  - id: cleanup
    agent: echo
    with: {text: "bye {{ secrets.SHORT_SECRET }}"}
"""


def _forms(secret: str) -> set[str]:
    raw = secret.encode()
    forms = {
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
    }
    return forms


def _leaks(text: str) -> list[str]:
    return sorted(
        f"{name}:{form!r}"
        for name, value in SECRETS.items()
        for form in _forms(value)
        if form in text
    )


def test_no_secret_leaks_anywhere(tmp_path):
    (tmp_path / "leaky.py").write_text(MODULE)
    wf = tmp_path / "leaky.yaml"
    wf.write_text(WORKFLOW)
    state = tmp_path / "state"
    env = {"PATH": "/usr/bin:/bin", **SECRETS, "ORCH_STATE_DIR": str(state)}
    seen: dict[str, str] = {}

    def orch(*args, name):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        seen[f"{name} stdout"] = proc.stdout
        seen[f"{name} stderr"] = proc.stderr
        return proc

    first = orch("run", str(wf), "--events", "jsonl", "--output-file", "report.json", name="run1")
    assert first.returncode == 0, first.stderr
    # Hold a connection open: the second run's write-ahead log then stays on disk
    # (the last connection to close would checkpoint it into the database and delete it).
    holder = sqlite3.connect(state / "state.db")
    holder.execute("SELECT COUNT(*) FROM events").fetchone()
    second = orch("run", str(wf), name="run2")  # plain lines and the outputs on stdout
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in first.stdout.splitlines()]
    run_id = events[0]["run_id"]
    for args in (
        ("logs", run_id),
        ("logs", run_id, "--json"),
        ("status", run_id),
        ("status", run_id, "--json"),
        ("runs",),
        ("logs", run_id, "--phase", "error"),
    ):
        assert orch(*args, name=" ".join(args)).returncode == 0

    # the leak attempts did happen (masked): the test would pass vacuously otherwise
    outputs = json.loads((tmp_path / "report.json").read_text())
    assert outputs["direct"] == "***"
    assert outputs["encoded"]["nested"] == [{"deep": "***"}]
    assert outputs["encoded"]["b64"] == "***" and outputs["encoded"]["url"] == "***"
    assert "could not log in with ***" in outputs["error"]
    streamed = "".join(
        e["data"]["text"]
        for e in events
        if e["event"] == "phase_stream" and e["phase"] == "streamed"
    )
    assert streamed == "***"
    retry = [e for e in events if e["event"] == "phase_retry"]
    assert retry and retry[0]["data"]["error"] == "token *** rejected"
    assert any((state / "outputs").rglob("*.json"))  # the big output was spilled

    seen["report"] = (tmp_path / "report.json").read_text()
    for path in sorted(p for p in state.rglob("*") if p.is_file()):  # db, -wal, spills
        seen[str(path.relative_to(tmp_path))] = path.read_bytes().decode("utf-8", "replace")
    holder.close()
    assert any(name.endswith("state.db") for name in seen)
    assert any(name.endswith("state.db-wal") for name in seen)
    found = {name: _leaks(text) for name, text in seen.items() if _leaks(text)}
    assert found == {}


def test_the_masker_covers_objects_sets_bytes_and_split_streams():
    from orchestrator.events import Event, SecretMasker

    secret = SECRETS["LONG_SECRET"]
    masker = SecretMasker([secret, ""])

    class Token:
        def __str__(self):
            return f"Token({secret})"

    data = {
        "obj": Token(),
        "set": {secret},
        "bytes": secret.encode(),
        "n": 3,
        "plain": Token.__name__,
        # top-level keys of event data are orch's own field names; user data,
        # keys included, sits below them
        "output": {secret: [(secret, 1)]},
    }
    masked = masker.mask_event(Event("phase_completed", "r", 0.0, "p", 1, data))
    text = masked.to_json()
    assert _leaks(text) == [] and "Token(***)" in text and '"n":3' in text
    stream = masker.stream()
    pieces = [stream.feed(secret[i : i + 2]) for i in range(0, len(secret), 2)]
    pieces.append(stream.feed(" tail"))
    pieces.append(stream.flush())
    assert "".join(pieces) == "*** tail" and all(secret[:4] not in p for p in pieces)
    assert SecretMasker(["", ""]).mask("anything") == "anything"  # empty is never a secret


def orch_run(tmp_path, *args, env):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ORCH_STATE_DIR": str(tmp_path / "state"), **env},
        cwd=tmp_path,
    )


@pytest.mark.parametrize("value", ["s", " ", "ab", " x "])
def test_a_secret_too_short_to_mask_is_not_masked_and_the_run_says_so(tmp_path, value):
    # 's' is in 'skipped', 'status', phase ids and JSON keys: masking it would rewrite them
    wf = tmp_path / "short.yaml"
    wf.write_text(
        "name: short\nphases:\n"
        "  - {id: says, agent: echo, with: {text: {status: 'x{{ secrets.S }}x'}}}\n"
        "  - {id: skips, agent: noop, when: 'false'}\n"
    )
    run = orch_run(tmp_path, "run", str(wf), "--events", "jsonl", env={"S": value})
    assert run.returncode == 0, run.stderr
    assert (
        "warning: secret S: shorter than 3 characters, so not masked (masking them would"
        " rewrite ordinary text); use longer secrets" in run.stderr.splitlines()[0]
    )
    events = [json.loads(line) for line in run.stdout.splitlines()]
    by_kind = {(e["event"], e.get("phase")): e for e in events}
    assert by_kind[("phase_completed", "says")]["data"]["output"] == {"status": f"x{value}x"}
    assert by_kind[("phase_skipped", "skips")]["data"]["status"] == "skipped"
    assert events[-1]["data"]["status"] == "completed"
    status = orch_run(tmp_path, "status", events[0]["run_id"], "--json", env={"S": value})
    states = {p["id"]: p["state"] for p in json.loads(status.stdout)["phases"]}
    assert states == {"says": "completed", "skips": "skipped"}


def test_a_three_letter_secret_is_still_masked_without_a_warning(tmp_path):
    wf = tmp_path / "three.yaml"
    wf.write_text("name: t\nphases:\n  - {id: a, agent: echo, with: {text: 'x{{ secrets.S }}'}}\n")
    run = orch_run(tmp_path, "run", str(wf), env={"S": "q7Z"})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {} and "warning" not in run.stderr
    assert "q7Z" not in run.stderr


RESUME = """
name: token
phases:
  - {id: make, agent: echo, with: {text: "token-{{ secrets.KEY }}"}}
  - id: gate
    agent: python
    depends_on: [make]
    with: {function: "gate:check"}
  - id: compare
    agent: echo
    depends_on: [gate]
    with:
      text: "{{ phases.make.output == 'token-' ~ secrets.KEY }}"
outputs:
  same: "{{ phases.compare.output }}"
"""


def test_a_resumed_run_gives_the_result_of_an_uninterrupted_one_with_secret_outputs(tmp_path):
    # a phase whose output held a secret is stored masked; a resume runs it again
    (tmp_path / "gate.py").write_text(
        "from pathlib import Path\n"
        "def check():\n"
        "    if not Path('open').exists():\n"
        "        raise RuntimeError('the gate is shut')\n"
        "    return 'open'\n"
    )
    wf = tmp_path / "token.yaml"
    wf.write_text(RESUME)
    env = {"KEY": "k3y-VALUE-123"}
    (tmp_path / "open").touch()
    whole = orch_run(tmp_path, "run", str(wf), env=env)
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout) == {"same": True}
    (tmp_path / "open").unlink()
    first = orch_run(tmp_path, "run", str(wf), "--events", "jsonl", env=env)
    assert first.returncode == 1
    events = [json.loads(line) for line in first.stdout.splitlines()]
    made = next(e for e in events if e["event"] == "phase_completed" and e["phase"] == "make")
    assert made["data"]["output"] == "token-***" and made["data"]["secret_masked"] is True
    (tmp_path / "open").touch()
    resumed = orch_run(tmp_path, "resume", events[0]["run_id"], env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "their output held a secret, so running again: make" in resumed.stderr
    assert json.loads(resumed.stdout) == json.loads(whole.stdout) == {"same": True}
    assert "k3y-VALUE-123" not in resumed.stdout + resumed.stderr


def test_an_output_holding_a_secret_is_never_served_masked_from_the_cache(tmp_path):
    wf = tmp_path / "cached.yaml"
    wf.write_text(
        "name: c\nphases:\n"
        "  - {id: make, agent: echo, cache: true, with: {text: 'token-{{ secrets.KEY }}'}}\n"
        "  - {id: plain, agent: echo, cache: true, with: {text: 'no secret'}}\n"
        "  - id: compare\n    agent: echo\n    depends_on: [make]\n"
        "    with: {text: \"{{ phases.make.output == 'token-' ~ secrets.KEY }}\"}\n"
        "outputs:\n  same: '{{ phases.compare.output }}'\n"
    )
    env = {"KEY": "k3y-VALUE-123"}
    for _ in range(2):
        run = orch_run(tmp_path, "run", str(wf), "--events", "jsonl", env=env)
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.splitlines()]
        assert events[-1]["data"]["outputs"] == {"same": True}
    cached = {e["phase"]: e["data"]["cached"] for e in events if e["event"] == "phase_completed"}
    assert cached == {"make": False, "plain": True, "compare": False}


def test_a_sub_runs_own_secret_is_not_stored_in_the_cache_nor_served_masked(tmp_path):
    # the sub-workflow reads a secret its caller does not: the store's cache masks only
    # the caller's, so the sub-run must keep its result out of the cache itself
    (tmp_path / "parent.yaml").write_text(
        "name: parent\nphases:\n  - {id: sub, agent: workflow, with: {path: child.yaml}}\n"
        "outputs:\n  same: '{{ phases.sub.output.same }}'\n"
    )
    (tmp_path / "child.yaml").write_text(
        "name: child\nphases:\n"
        "  - {id: make, agent: echo, cache: true, with: {text: 'token-{{ secrets.KEY }}'}}\n"
        "  - id: compare\n    agent: echo\n    depends_on: [make]\n"
        "    with: {text: \"{{ phases.make.output == 'token-' ~ secrets.KEY }}\"}\n"
        "outputs:\n  same: '{{ phases.compare.output }}'\n"
    )
    env = {"KEY": "k3y-VALUE-123"}
    for _ in range(2):  # the second run: a cache hit would give 'token-***'
        run = orch_run(tmp_path, "run", "parent.yaml", "--events", "jsonl", env=env)
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.splitlines()]
        assert events[-1]["data"]["outputs"] == {"same": True}
    files = [f for f in (tmp_path / "state").rglob("*") if f.is_file()]
    assert files
    assert not [f for f in files if env["KEY"].encode() in f.read_bytes()]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ secrets[inputs.which] }}", "read a secret by its name (secrets.NAME"),
        ("{{ secrets | tojson }}", "read a secret by its name"),
        ("{{ env[inputs.which] }}", "read an environment variable by its name (env.NAME"),
        ("{{ env | tojson }}", "read an environment variable by its name"),
    ],
)
def test_secrets_and_env_are_read_by_name(tmp_path, template, expected):
    wf = tmp_path / "dyn.yaml"
    wf.write_text(
        "name: d\ninputs:\n  which: {type: string, default: KEY}\nphases:\n"
        f"  - {{id: a, agent: echo, with: {{text: '{template}'}}}}\n"
    )
    result = orch_run(tmp_path, "validate", str(wf), env={"KEY": "k3y-VALUE-123"})
    assert result.returncode == 2
    assert "dyn.yaml:5:" in result.stdout + result.stderr
    assert expected in result.stdout + result.stderr


def test_env_holds_only_the_variables_the_workflow_names(tmp_path):
    wf = tmp_path / "env.yaml"
    wf.write_text(
        "name: e\nphases:\n"
        "  - {id: a, agent: echo, with: {text: \"{{ env.SHOWN }} {{ env['ALSO'] }}\"}}\n"
        "  - {id: b, agent: echo, with: {text: \"{{ env.HIDDEN | default('unset') }}\"}}\n"
    )
    plan = compile_plan(load_workflow(wf))
    assert plan.workflow.env_names == {"SHOWN", "ALSO", "HIDDEN"}
    env = {"SHOWN": "one", "ALSO": "two", "OTHER": "three"}
    result = run_sync(plan, options=RunOptions(environ={**os.environ, **env}))
    assert result.phases["a"].output == "one two"
    assert result.phases["b"].output == "unset"
