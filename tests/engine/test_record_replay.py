"""`orch run --record DIR` against the fake OpenAI server, then `--replay DIR` with the server
stopped (nothing listens: any network call would fail) and without the API key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ROOT / "workflows" / "llm-research-write-edit.yaml"
KEY = "sk-recorded-secret-7731"


def answer(request: dict) -> str:
    system = request["messages"][0]["content"]
    if "researcher" in system:
        return "- tide pools hold water at low tide"
    if "writer" in system:
        return "Tide pools keep water when the sea goes out."
    return "Tide pools hold water at low tide."


def orch(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**base, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch"), **env},
        timeout=120,
    )


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def seen(evs: list[dict]) -> list[tuple]:
    """What a user sees of a run: phase events with their data, without times and ids, and
    each phase's streamed text (the pieces may be cut elsewhere: secrets are held back)."""
    out = []
    streams: dict[str, str] = {}
    for e in evs:
        if e["event"] == "phase_stream":
            streams[e["phase"]] = streams.get(e["phase"], "") + e["data"]["text"]
            continue
        data = {k: v for k, v in e.get("data", {}).items() if k not in ("duration", "pid")}
        if e["event"] == "workflow_started":
            data = {"phases": data["phases"]}
        out.append((e["event"], e.get("phase"), e.get("attempt"), json.dumps(data, sort_keys=True)))
    return out + sorted(streams.items())


def test_a_recorded_run_replays_offline_with_the_same_results(tmp_path):
    calls = tmp_path / "calls"
    args = ["run", str(CHAIN), "--events", "jsonl", "--input", "topic=tide pools"]
    with FakeOpenAI(answer=answer) as srv:
        url = srv.base_url
        recorded = orch(
            tmp_path,
            *args,
            "--record",
            str(calls),
            env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url},
        )
        assert len(srv.requests) == 3
    assert recorded.returncode == 0, recorded.stderr
    files = sorted(calls.glob("*.json"))
    assert len(files) == 3
    stored = [json.loads(f.read_text()) for f in files]
    assert sorted(r["phase"] for r in stored) == ["edit", "research", "write"]
    research = next(r for r in stored if r["phase"] == "research")
    assert research["agent"] == "researcher" and research["agent_type"] == "llm"
    assert research["input"]["prompt"] == "Research this topic: tide pools"
    assert research["input"]["api_key"] == "***"
    call = research["calls"][0]
    assert call["output"] == "- tide pools hold water at low tide"
    assert "".join(call["stream"]) == "- tide pools hold water at low tide"
    assert call["metadata"]["tokens"]["completion"] == 8
    for f in files:  # the secret is never written
        assert KEY not in f.read_text()

    # the server is gone: the port refuses connections, and there is no API key
    replayed = orch(tmp_path, *args, "--replay", str(calls), env={"OPENAI_BASE_URL": url})
    assert replayed.returncode == 0, replayed.stderr
    before, after = events(recorded.stdout), events(replayed.stdout)
    assert seen(after)[1:] == seen(before)[1:]  # same phases, streams, outputs and tokens
    assert after[-1]["data"]["outputs"]["article"] == "Tide pools hold water at low tide."
    assert after[-1]["data"]["tokens"] == before[-1]["data"]["tokens"]
    assert sum(1 for e in after if e["event"] == "phase_stream") > 3


def test_replay_fails_loudly_on_a_call_it_has_not_seen(tmp_path):
    calls = tmp_path / "calls"
    with FakeOpenAI(answer=answer) as srv:
        url = srv.base_url
        recorded = orch(
            tmp_path,
            "run",
            str(CHAIN),
            "--input",
            "topic=tide pools",
            "--record",
            str(calls),
            env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url},
        )
    assert recorded.returncode == 0, recorded.stderr
    replayed = orch(
        tmp_path,
        "run",
        str(CHAIN),
        "--input",
        "topic=rock pools",
        "--replay",
        str(calls),
        env={"OPENAI_BASE_URL": url},
    )
    assert replayed.returncode == 1
    assert "Traceback" not in replayed.stderr
    assert (
        f"phase 'research' failed: --replay {calls}: no recorded call matches phase 'research'"
        " (agent 'researcher'): input.prompt: recorded \"Research this topic: tide pools\","
        ' now "Research this topic: rock pools"'
    ) in replayed.stderr


def test_record_and_replay_are_refused_together_and_replay_needs_the_folder(tmp_path):
    both = orch(
        tmp_path, "run", str(CHAIN), "--record", "a", "--replay", "b", "-i", "topic=x", env={}
    )
    assert both.returncode == 2
    assert "--record and --replay cannot be used together" in both.stderr
    missing = orch(tmp_path, "run", str(CHAIN), "--replay", "nowhere", "-i", "topic=x", env={})
    assert missing.returncode == 2
    assert "--replay nowhere: no such folder" in missing.stderr
    (tmp_path / "notes.md").write_text("not a folder\n")
    file = orch(tmp_path, "run", str(CHAIN), "--replay", "notes.md", "-i", "topic=x", env={})
    assert file.returncode == 2
    assert "error: --replay notes.md: 'notes.md' is a file, not a folder" in file.stderr
    assert "Traceback" not in both.stderr + missing.stderr + file.stderr


RECORDED = ROOT / "workflows" / "recordings" / "llm-research-write-edit"
#: `orch run` of the example with the inputs of the committed recording
REPLAY_ARGS = (
    "run",
    str(CHAIN),
    "--events",
    "jsonl",
    "-i",
    "topic=tide pools",
    "-i",
    "model=llama3.2",
)
RESEARCH = "1d98175a6c75a6b93df4f33b657695e7.json"  # the research phase's recording


def _break_calls(record: dict) -> None:
    record["calls"] = []


def _calls_text(record: dict) -> None:
    record["calls"] = "nope"


def _no_output(record: dict) -> None:
    del record["calls"][0]["output"]


def _stream_of_numbers(record: dict) -> None:
    record["calls"][0]["stream"] = [1, 2]


def _no_input(record: dict) -> None:
    del record["input"]


def _other_format(record: dict) -> None:
    record["format"] = 2


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("{{{", "not JSON (Expecting property name enclosed in double quotes"),
        ("[]", "it holds a list, not a mapping of phase, agent, input and calls"),
        (_break_calls, "'calls' is empty: a recording holds at least one result"),
        (_calls_text, "'calls' must be a list of results, not the string 'nope'"),
        (_no_output, "calls[0]: it has neither 'output' nor 'error'"),
        (_stream_of_numbers, "calls[0]: 'stream' must be a list of strings"),
        (_no_input, "'input' is missing"),
        (_other_format, "format the number 2 is not the one this orch reads (1)"),
    ],
)
def test_a_broken_recording_is_refused_before_the_run_naming_the_file(tmp_path, damage, problem):
    """A recording that is not JSON or not shaped as --record writes it: exit 2 before anything
    runs (never skipped, never replayed as a null output), naming the file and what is wrong."""
    calls = tmp_path / "calls"
    shutil.copytree(RECORDED, calls)
    broken = calls / RESEARCH
    if callable(damage):
        record = json.loads(broken.read_text())
        damage(record)
        broken.write_text(json.dumps(record))
    else:
        broken.write_text(damage + "\n")
    replayed = orch(tmp_path, *REPLAY_ARGS, "--replay", "calls", env={})
    assert replayed.returncode == 2, replayed.stderr
    assert replayed.stdout == ""  # no event: nothing ran
    assert replayed.stderr.startswith(
        f"error: --replay calls: a file is not a recording made by --record: calls/{RESEARCH}: "
        + problem
    ), replayed.stderr
    assert "Traceback" not in replayed.stderr
    assert "started" not in replayed.stderr


def test_every_broken_recording_of_a_folder_is_named(tmp_path):
    calls = tmp_path / "calls"
    shutil.copytree(RECORDED, calls)
    (calls / "abc.json").write_text("{{{\n")
    (calls / "def.json").write_text("[]\n")
    (calls / "notes.txt").write_text("not a recording, and not *.json: not read\n")
    replayed = orch(tmp_path, "run", str(CHAIN), "-i", "topic=x", "--replay", "calls", env={})
    assert replayed.returncode == 2
    assert "error: --replay calls: 2 files are not recordings made by --record: " in replayed.stderr
    assert "calls/abc.json: not JSON" in replayed.stderr
    assert "calls/def.json: it holds a list" in replayed.stderr


def test_the_committed_recording_replays_the_llm_example_without_a_model(tmp_path):
    """workflows/recordings/llm-research-write-edit is what CI replays: no server, no key.
    Editing the workflow's prompts breaks this test until the calls are recorded again."""
    calls = RECORDED
    replayed = orch(
        tmp_path,
        *REPLAY_ARGS,
        "--replay",
        str(calls),
        env={},
    )
    assert replayed.returncode == 0, replayed.stderr
    end = events(replayed.stdout)[-1]
    assert end["data"]["outputs"] == {
        "article": "Tide pools hold water at low tide.",
        "notes": "- tide pools hold water at low tide",
    }
    assert end["data"]["tokens"] == {"prompt": 73, "completion": 24, "total": 97}
    for path in calls.glob("*.json"):
        assert json.loads(path.read_text())["input"]["api_key"] == "***"


def test_a_recording_made_with_a_warm_cache_replays_on_a_fresh_state_folder(tmp_path):
    wf = tmp_path / "c.yaml"
    wf.write_text(
        """name: c
phases:
  - id: a
    agent: shell
    cache: true
    with: {command: "echo ran >> ledger; echo hi"}
  - id: b
    agent: echo
    with: {text: "{{ phases.a.output | trim }} there"}
"""
    )
    warm = orch(tmp_path, "run", str(wf), env={})
    assert warm.returncode == 0, warm.stderr
    calls = tmp_path / "calls"
    recorded = orch(tmp_path, "run", str(wf), "--record", str(calls), env={})
    assert recorded.returncode == 0, recorded.stderr
    # the cached phase called its agent again, so its call is in the recording
    assert (tmp_path / "ledger").read_text().split() == ["ran", "ran"]
    assert sorted(json.loads(f.read_text())["phase"] for f in calls.glob("*.json")) == ["a", "b"]
    fresh = orch(
        tmp_path,
        "run",
        str(wf),
        "--replay",
        str(calls),
        "--events",
        "jsonl",
        env={"ORCH_STATE_DIR": str(tmp_path / "fresh")},
    )
    assert fresh.returncode == 0, fresh.stderr
    assert events(fresh.stdout)[-1]["data"]["status"] == "completed"
    assert (tmp_path / "ledger").read_text().split() == ["ran", "ran"]
    done = {
        e["phase"]: e["data"]["output"]
        for e in events(fresh.stdout)
        if e["event"] == "phase_completed"
    }
    assert done == {"a": "hi", "b": "hi there"}


def test_a_secret_passed_to_a_sub_workflow_is_not_written_by_record_and_replays(tmp_path):
    # the parent passes its secret in as an input: the sub-run's call must not store it
    (tmp_path / "parent.yaml").write_text(
        "name: parent\nphases:\n  - id: sub\n    agent: workflow\n"
        "    with: {path: child.yaml, inputs: {token: '{{ secrets.API_TOKEN }}'}}\n"
        "outputs:\n  said: '{{ phases.sub.output.said }}'\n",
        encoding="utf-8",
    )
    (tmp_path / "child.yaml").write_text(
        "name: child\ninputs:\n  token: {type: string, required: true}\nphases:\n"
        "  - id: say\n    agent: shell\n"
        "    with: {command: 'echo \"token $T\"', env: {T: '{{ inputs.token }}'}}\n"
        "outputs:\n  said: '{{ phases.say.output }}'\n",
        encoding="utf-8",
    )
    calls = tmp_path / "calls"
    args = ["run", "parent.yaml", "--events", "jsonl"]
    recorded = orch(tmp_path, *args, "--record", str(calls), env={"API_TOKEN": KEY})
    assert recorded.returncode == 0, recorded.stderr
    files = sorted(calls.glob("*.json"))
    stored = [json.loads(f.read_text()) for f in files]
    assert sorted(r["phase"] for r in stored) == ["say", "sub"]
    say = next(r for r in stored if r["phase"] == "say")
    assert say["input"]["env"] == {"T": "***"}
    assert say["calls"][0]["output"] == "token ***"
    for f in files:  # the secret is never written, not even by the sub-run's call
        assert KEY not in f.read_text()
    # replayed: every call, the sub-run's too, is found in the folder (a miss fails the run)
    replayed = orch(tmp_path, *args, "--replay", str(calls), env={"API_TOKEN": KEY})
    assert replayed.returncode == 0, replayed.stderr
    assert events(replayed.stdout)[-1]["data"]["outputs"] == {"said": "token ***"}


def test_replay_without_the_secret_warns_of_nothing_and_a_short_secret_set_is_still_said(tmp_path):
    """Under --replay an unset secret is fine (the README says so): no warning about it."""
    unset = orch(tmp_path, *REPLAY_ARGS, "--replay", str(RECORDED), env={})
    assert unset.returncode == 0, unset.stderr
    assert "warning" not in unset.stderr
    short = orch(tmp_path, *REPLAY_ARGS, "--replay", str(RECORDED), env={"OPENAI_API_KEY": "ab"})
    assert short.stderr.startswith(
        "warning: secret OPENAI_API_KEY: shorter than 3 characters, so not masked"
    )
    # without --replay an unset secret is an error, and only that
    missing = orch(tmp_path, "run", str(CHAIN), "-i", "topic=x", env={})
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: secret 'OPENAI_API_KEY' not set in the environment"), (
        missing.stderr
    )


FAILING = """\
name: failing-calls
agents:
  asker:
    type: llm
    with: {base_url: "BASE", model: m, response_format: json}
  checker:
    type: python
    with: {function: "quota_check:check"}
phases:
  - {id: ask, agent: asker, with: {prompt: "Answer in JSON"}, continue_on_error: true}
  - {id: check, agent: checker, depends_on: [ask]}
"""

QUOTA_CHECK = """\
from orchestrator import AgentFailure


def check():
    raise AgentFailure("the quota is used up", transient=False, hint="raise the quota")
"""


def test_a_replayed_failure_is_the_live_one_with_its_hint_and_tokens(tmp_path):
    calls = tmp_path / "calls"
    (tmp_path / "quota_check.py").write_text(QUOTA_CHECK)
    args = ["run", "failing.yaml", "--events", "jsonl"]
    # the model's answer is not JSON: the call fails after using tokens
    with FakeOpenAI(["no json here"]) as srv:
        (tmp_path / "failing.yaml").write_text(FAILING.replace("BASE", srv.base_url))
        recorded = orch(tmp_path, *args, "--record", str(calls), env={})
    assert recorded.returncode == 1, recorded.stderr
    before = {
        e["phase"]: e["data"] for e in events(recorded.stdout) if e["event"] == "phase_failed"
    }
    assert before["check"]["error"] == "the quota is used up"  # one line, the hint apart
    assert before["ask"]["error"].startswith("the model's answer is not valid JSON")
    assert before["ask"]["metadata"]["tokens"]["total"] > 0
    stored = {
        r["phase"]: r["calls"][0] for r in (json.loads(f.read_text()) for f in calls.glob("*.json"))
    }
    assert stored["check"]["error"] == "the quota is used up"
    assert stored["check"]["hint"] == "raise the quota"
    assert stored["ask"]["metadata"]["tokens"] == before["ask"]["metadata"]["tokens"]

    # the server is gone: the replay answers from the folder
    replayed = orch(tmp_path, *args, "--replay", str(calls), env={})
    assert replayed.returncode == 1, replayed.stderr
    after = {e["phase"]: e["data"] for e in events(replayed.stdout) if e["event"] == "phase_failed"}
    for phase in ("ask", "check"):
        assert after[phase]["error"] == before[phase]["error"]
        assert after[phase].get("metadata") == before[phase].get("metadata")
    assert (
        events(replayed.stdout)[-1]["data"]["tokens"]
        == events(recorded.stdout)[-1]["data"]["tokens"]
    )
    assert seen(events(replayed.stdout))[1:] == seen(events(recorded.stdout))[1:]


def test_a_recording_without_hint_or_metadata_still_replays(tmp_path):
    """A recording made before failures kept their hint and usage: the error replays."""
    calls = tmp_path / "calls"
    (tmp_path / "quota_check.py").write_text(QUOTA_CHECK)
    (tmp_path / "failing.yaml").write_text(FAILING.replace("BASE", "http://127.0.0.1:9/v1"))
    recorded = orch(tmp_path, "run", "failing.yaml", "--record", str(calls), env={})
    assert recorded.returncode == 1, recorded.stderr
    for f in calls.glob("*.json"):
        data = json.loads(f.read_text())
        for call in data["calls"]:
            call.pop("hint", None)
            call.pop("metadata", None)
        f.write_text(json.dumps(data))
    replayed = orch(
        tmp_path, "run", "failing.yaml", "--replay", str(calls), "--events", "jsonl", env={}
    )
    assert replayed.returncode == 1, replayed.stderr
    failed = {
        e["phase"]: e["data"] for e in events(replayed.stdout) if e["event"] == "phase_failed"
    }
    assert failed["check"]["error"] == "the quota is used up"
