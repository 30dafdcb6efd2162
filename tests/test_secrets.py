"""X7: a workflow that tries every way to leak a secret; not one occurrence anywhere.

Anywhere: stdout and stderr of `orch run` (plain lines and --events jsonl), the
--output-file report, `orch logs`/`status`/`runs`, and every file of the state
directory (the database with its WAL, spilled outputs), in the exact, base64,
URL-encoded and JSON-escaped forms, for a long, a short and a multiline secret.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import urllib.parse

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


def test_a_one_letter_secret_is_masked_in_user_data_without_corrupting_the_record(tmp_path):
    # 's' is in 'skipped', 'status', phase ids and event names: only user data is masked
    wf = tmp_path / "short.yaml"
    wf.write_text(
        "name: short\nphases:\n"
        "  - {id: says, agent: echo, with: {text: 'x{{ secrets.S }}x'}}\n"
        "  - {id: skips, agent: noop, when: 'false'}\n"
    )
    state = tmp_path / "state"
    env = {"PATH": "/usr/bin:/bin", "S": "s", "ORCH_STATE_DIR": str(state)}
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(wf), "--events", "jsonl"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    by_kind = {(e["event"], e.get("phase")): e for e in events}
    assert by_kind[("phase_completed", "says")]["data"]["output"] == "x***x"
    assert by_kind[("phase_skipped", "skips")]["data"]["status"] == "skipped"
    assert events[-1]["data"]["status"] == "completed"
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", events[0]["run_id"], "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    info = json.loads(status.stdout)
    states = {p["id"]: p["state"] for p in info["phases"]}
    assert states == {"says": "completed", "skips": "skipped"}
