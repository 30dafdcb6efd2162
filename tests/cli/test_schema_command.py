"""`orch schema [--agents]` checked by the real YAML language server (npm) and by jsonschema.

The language server is what editors run: it must complete keys inside ``with:``
from the agent type's schema and flag what ``orch validate`` refuses, and it must
raise nothing on the workflows we ship. It is installed on demand with npm into
``.venv/node`` (``.ci/run`` does the same); without node or npm those tests skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.spec.values import check_cron

ROOT = Path(__file__).resolve().parents[2]
ORCH = str(Path(sys.executable).parent / "orch")
YAMLLS_VERSION = "1.25.0"
YAMLLS_HOME = ROOT / ".venv" / "node"


def _orch_schema(*args: str) -> dict[str, Any]:
    done = subprocess.run([ORCH, "schema", *args], capture_output=True, text=True, check=True)
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_orch_schema_prints_the_bundled_file_byte_for_byte():
    done = subprocess.run([ORCH, "schema"], capture_output=True, check=True)
    assert done.stdout == (ROOT / "schemas" / "workflow.schema.json").read_bytes()


def test_the_agents_schema_is_a_valid_2020_12_schema_with_a_rule_per_agent_type():
    schema = _orch_schema("--agents")
    jsonschema.Draft202012Validator.check_schema(schema)
    rules = schema["$defs"]["phase"]["allOf"]
    types = {r["if"]["properties"]["agent"]["const"] for r in rules}
    assert {"shell", "http", "llm", "echo", "python", "workflow"} <= types


def _phase(**keys: Any) -> dict[str, Any]:
    return {"phases": [{"id": "a", "agent": "echo", **keys}]}


def _agent(**keys: Any) -> dict[str, Any]:
    return {"agents": {"x": {"type": "echo", **keys}}, "phases": [{"id": "a", "agent": "x"}]}


_ZEROS = (0, 0.0, "0ms", "0s", "0m", "0h", "0.0s", "0h0m", " 0s ")
_POSITIVE = (0.5, 1, "1ms", "0.5s", "1h30m", "0h1m")
#: Each key that refuses a zero duration: where it goes in a workflow.
_POSITIVE_DURATIONS: dict[str, Any] = {
    "timeout": lambda d: {"timeout": d},
    "defaults.timeout": lambda d: {"defaults": {"timeout": d}},
    "defaults.cache.ttl": lambda d: {"defaults": {"cache": {"ttl": d}}},
    "phase timeout": lambda d: _phase(timeout=d),
    "approval.timeout": lambda d: _phase(approval={"timeout": d}),
    "cache.ttl": lambda d: _phase(cache={"ttl": d}),
    "circuit_breaker.reset_after": lambda d: _agent(circuit_breaker={"reset_after": d}),
}
#: Each duration key inside an agent type's with: (only the published schema knows them).
_WITH_DURATIONS: dict[str, Any] = {
    "http with.timeout": lambda d: {
        "phases": [{"id": "a", "agent": "http", "with": {"url": "http://h", "timeout": d}}]
    },
    "llm with.timeout": lambda d: {
        "phases": [{"id": "a", "agent": "llm", "with": {"prompt": "p", "model": "m", "timeout": d}}]
    },
    "agents: llm with.timeout": lambda d: {
        "agents": {"x": {"type": "llm", "with": {"timeout": d}}},
        "phases": [{"id": "a", "agent": "x", "with": {"prompt": "p", "model": "m"}}],
    },
}
#: Each duration key where zero is a value (no wait between retries).
_DURATIONS: dict[str, Any] = {
    "retries.delay": lambda d: _phase(retries={"attempts": 1, "delay": d}),
    "retries.max_delay": lambda d: _phase(retries={"attempts": 1, "delay": 0, "max_delay": d}),
    "retries.jitter": lambda d: _phase(retries={"attempts": 1, "jitter": d}),
}
#: Each count or rate: (where, the smallest value validate takes).
_COUNTS: dict[str, Any] = {
    "max_parallel": (lambda n: {"max_parallel": n}, 1),
    "phase max_parallel": (lambda n: _phase(max_parallel=n, foreach=[1]), 1),
    "repeat.max": (lambda n: _phase(repeat={"max": n, "until": "true"}), 1),
    "budget.tokens": (lambda n: {"budget": {"tokens": n}}, 1),
    "budget.cost": (lambda n: {"budget": {"cost": n}}, 0),
    "phase budget.tokens": (lambda n: _phase(budget={"tokens": n}), 1),
    "max_concurrency": (lambda n: _agent(max_concurrency=n), 1),
    "circuit_breaker.failures": (lambda n: _agent(circuit_breaker={"failures": n}), 1),
    "handoff.max_turns": (
        lambda n: {
            "agents": {"a": {"type": "echo"}, "b": {"type": "echo"}},
            "phases": [{"id": "h", "handoff": {"agents": ["a", "b"], "max_turns": n}}],
        },
        1,
    ),
    "retries.attempts": (lambda n: _phase(retries={"attempts": n}), 0),
    "error_handling.max_total_retries": (lambda n: {"error_handling": {"max_total_retries": n}}, 0),
}
_CASES: list[tuple[str, dict[str, Any], bool]] = [
    *((f"{k} {d!r}", f(d), False) for k, f in _POSITIVE_DURATIONS.items() for d in _ZEROS),
    *((f"{k} {d!r}", f(d), True) for k, f in _POSITIVE_DURATIONS.items() for d in _POSITIVE),
    *((f"{k} {d!r}", f(d), True) for k, f in _DURATIONS.items() for d in _ZEROS + _POSITIVE),
    *((f"{k} -1s", f("-1s"), False) for k, f in {**_POSITIVE_DURATIONS, **_DURATIONS}.items()),
    *((f"{k} {d!r}", f(d), False) for k, f in _WITH_DURATIONS.items() for d in (*_ZEROS, -1)),
    *((f"{k} {d!r}", f(d), True) for k, f in _WITH_DURATIONS.items() for d in _POSITIVE),
    *((f"{k} {n}", f(n), n >= least) for k, (f, least) in _COUNTS.items() for n in (-1, 0, 1)),
    *(
        (f"rate_limit {r}", _agent(rate_limit=r), ok)
        for r, ok in (("0/m", False), ("00/s", False), ("0/h", False), ("1/h", True))
    ),
    *(
        (f"cron {c}", {"schedule": [{"cron": c}]}, ok)
        for c, ok in (("0 24 * * *", False), ("*/15 9-17 * * MON-fri", True), ("@daily", True))
    ),
]


def test_the_schema_refuses_what_validate_refuses_key_by_key(tmp_path):
    """Every duration, count and rate key at and around its bound: the bundled schema, the
    published one (`orch schema --agents`) and `orch validate` give the same answer (an
    agent type's with: keys: the published schema and validate)."""
    bundled = jsonschema.Draft202012Validator(
        json.loads((ROOT / "schemas" / "workflow.schema.json").read_text())
    )
    published = jsonschema.Draft202012Validator(_orch_schema("--agents"))
    files = {}
    for n, (name, snippet, _) in enumerate(_CASES):
        doc = {"name": "t", "phases": [{"id": "a", "agent": "echo"}], **snippet}
        files[name] = (tmp_path / f"case{n}.yaml", doc)
        files[name][0].write_text(json.dumps(doc))  # JSON is YAML
    done = subprocess.run([ORCH, "validate", str(tmp_path)], capture_output=True, text=True)
    refused = {line.split(":")[0] for line in done.stdout.splitlines() if ": ok" not in line}
    assert "Traceback" not in done.stderr
    for name, _, valid in _CASES:
        path, doc = files[name]
        answers = (bundled.is_valid(doc), published.is_valid(doc), str(path) not in refused)
        if "with." in name:  # the bundled schema takes any with:
            answers = (valid, *answers[1:])
        assert answers == (valid, valid, valid), (name, done.stdout)


_CRON_TEXT = st.lists(
    st.sampled_from(
        [
            "*",
            "*/5",
            "0",
            "7",
            "07",
            "59",
            "60",
            "23",
            "24",
            "31",
            "32",
            "1-5",
            "5-1",
            "mon",
            "SUN",
            "jan",
            "dec",
            "12",
            "13",
            "0/0",
            "1,2",
            ",",
            "-",
            "x",
        ]
    ),
    min_size=3,
    max_size=6,
).map(" ".join)


@given(_CRON_TEXT)
def test_the_cron_pattern_accepts_what_validate_accepts(text):
    schema = json.loads((ROOT / "schemas" / "workflow.schema.json").read_text())
    cron = schema["properties"]["schedule"]["items"]["properties"]["cron"]
    pattern = cron["allOf"][0]["pattern"]
    if check_cron(text) is None:  # never a false error in an editor
        assert re.search(pattern, text), text
    elif re.search(pattern, text):  # what the pattern lets through, validate explains
        assert "runs backwards" in str(check_cron(text)), text  # a pattern cannot order ranges


# -- the real YAML language server -------------------------------------------------


@pytest.fixture(scope="module")
def yamlls() -> list[str]:
    """The argv that starts yaml-language-server on stdio; installed with npm if missing."""
    script = YAMLLS_HOME / "node_modules" / "yaml-language-server" / "bin" / "yaml-language-server"
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        pytest.skip("node is not installed: the YAML language server cannot run")
    if not script.is_file():
        if npm is None:
            pytest.skip("npm is not installed: cannot install yaml-language-server")
        YAMLLS_HOME.mkdir(parents=True, exist_ok=True)
        # one install at a time: the suite's workers (pytest -n) share this folder
        with (YAMLLS_HOME / ".install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = None
            if not script.is_file():  # not installed by another worker meanwhile
                done = subprocess.run(
                    [npm, "install", "--prefix", str(YAMLLS_HOME), "--no-audit", "--no-fund",
                     f"yaml-language-server@{YAMLLS_VERSION}"],
                    capture_output=True, text=True, timeout=300,
                )  # fmt: skip
        if (done is not None and done.returncode != 0) or not script.is_file():
            said = done.stderr[-500:] if done is not None else ""
            pytest.skip(f"npm could not install yaml-language-server: {said}")
    return [node, str(script), "--stdio"]


class _Client:
    """Just enough of a language client: JSON-RPC over the server's stdin and stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = 0
            while (line := out.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if not line:
                return
            self.inbox.put(json.loads(out.read(length)))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        wanted = self.next_id
        self.send({"id": wanted, "method": method, "params": params})
        return self.receive(lambda m: m.get("id") == wanted and "method" not in m)["result"]

    def receive(self, match: Any, timeout: float = 60) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            message = self.inbox.get(timeout=max(0.01, end - time.monotonic()))
            if "method" in message and "id" in message:  # the server asks us something
                items = message.get("params", {}).get("items", [])
                result = [{"validate": True, "completion": True}] * len(items) or None
                self.send({"id": message["id"], "result": result})
            elif match(message):
                return message

    def open(self, path: Path) -> list[dict[str, Any]]:
        """Open a document; its diagnostics."""
        doc = {"uri": path.as_uri(), "languageId": "yaml", "version": 1, "text": path.read_text()}
        self.send({"method": "textDocument/didOpen", "params": {"textDocument": doc}})
        found = self.receive(
            lambda m: (
                m.get("method") == "textDocument/publishDiagnostics"
                and m["params"]["uri"] == path.as_uri()
            )
        )
        return list(found["params"]["diagnostics"])

    def complete(self, path: Path, line: int, col: int) -> list[str]:
        result = self.request(
            "textDocument/completion",
            {"textDocument": {"uri": path.as_uri()}, "position": {"line": line, "character": col}},
        )
        items = result["items"] if isinstance(result, dict) else result
        return sorted(item["label"] for item in items)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def editor(yamlls, tmp_path):
    schema = tmp_path / "orch.schema.json"
    schema.write_text(json.dumps(_orch_schema("--agents")))
    client = _Client(yamlls)
    client.request(
        "initialize",
        {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}},
    )
    client.send({"method": "initialized", "params": {}})
    settings = {"yaml": {"validate": True, "completion": True, "hover": True}}
    client.send({"method": "workspace/didChangeConfiguration", "params": {"settings": settings}})
    yield client, schema
    client.close()


def _doc(folder: Path, schema: Path, body: str) -> Path:
    path = folder / "wf.yaml"
    path.write_text(f"# yaml-language-server: $schema={schema.as_uri()}\n{body}")
    return path


def test_the_editor_completes_keys_inside_with_from_the_agent_type(editor, tmp_path):
    client, schema = editor
    path = _doc(
        tmp_path,
        schema,
        "name: t\nphases:\n  - id: a\n    agent: shell\n    with:\n"
        '      command: "{{ inputs.x }}"\n      \n',
    )
    assert client.open(path) == []  # a template where a list is expected is fine
    offered = client.complete(path, 7, 6)
    assert {"cwd", "env", "stdin", "output"} <= set(offered)
    assert "command" not in offered  # already there


def test_the_editor_offers_no_internal_key_and_names_the_skeleton_in_words(editor, tmp_path):
    client, schema = editor
    path = _doc(
        tmp_path, schema, "name: t\nphases:\n  - id: a\n    agent: sleep\n    with:\n      \n"
    )
    client.open(path)
    offered = client.complete(path, 6, 6)
    # the keys of the sleep agent, and the completion that fills in its required keys,
    # labelled in words (it was the schema's $defs name, with_sleep); its test hook
    # (ledger, x-internal) is valid but not offered, as `orch agents` does not show it
    assert offered == ["output", "seconds", "with: of a sleep agent"]


def test_the_editor_offers_no_other_agent_type_s_keys_under_a_named_agent(editor, tmp_path):
    """JSON Schema cannot narrow `with:` by the type of the agent a phase names (that is
    in another part of the document): the editor offers nothing there, never the keys of
    every agent type; `orch validate` checks the keys."""
    client, schema = editor
    path = _doc(
        tmp_path,
        schema,
        "name: t\nagents:\n  lister: {type: shell}\n"
        "phases:\n  - id: a\n    agent: lister\n    with:\n      command: [ls]\n      \n",
    )
    assert client.open(path) == []
    assert client.complete(path, 9, 6) == []


def test_the_editor_flags_what_orch_validate_refuses(editor, tmp_path):
    client, schema = editor
    path = _doc(
        tmp_path,
        schema,
        "name: t\n"
        "timeout: 0\n"
        "agents:\n  crm: {type: http, rate_limit: 0/s, with: {bogus: 1}}\n"
        "schedule:\n  - cron: '61 * * * *'\n"
        "phases:\n  - id: a\n    agent: shell\n    with: {command: [ls], nope: 1}\n",
    )
    flagged = sorted({d["range"]["start"]["line"] for d in client.open(path)})
    # lines (0-based, after the modeline): timeout, the agent (rate, bogus), cron, nope
    assert flagged == [2, 4, 6, 10]
    # and orch validate agrees on each of them
    done = subprocess.run([ORCH, "validate", str(path)], capture_output=True, text=True)
    prefix = f"{path}:"
    lines = {int(line[len(prefix) :].split(":")[0]) - 1 for line in done.stdout.splitlines()
             if line.startswith(prefix)}  # fmt: skip
    assert lines == set(flagged)


def test_the_shipped_workflows_raise_nothing_in_the_editor(editor, tmp_path):
    client, schema = editor
    for source in sorted((ROOT / "workflows").glob("*.yaml")):
        body = source.read_text().split("\n", 1)[1]  # the modeline points at the repo schema
        path = tmp_path / source.name
        path.write_text(f"# yaml-language-server: $schema={schema.as_uri()}\n{body}")
        assert client.open(path) == [], source.name
