"""Bad `with:` of the built-in agent types are located problems of `orch validate` (exit 2)."""

from __future__ import annotations

from typer.testing import CliRunner

from orchestrator.cli import app

BAD = """\
name: bad-configs
agents:
  api: {type: http, with: {base_url: "http://127.0.0.1:1", timeout: forever}}
phases:
  - id: s1
    agent: shell
    with: {command: [ls, 3]}
  - id: s2
    agent: shell
    with: {command: "ls", outptu: json}
  - id: s3
    agent: shell
    with: {cwd: /tmp}
  - id: h1
    agent: api
    with: {method: FETCH}
  - id: h2
    agent: http
    with: {url: "http://x", expect_status: [700], json: {a: 1}}
  - id: h3
    agent: http
    with: {url: "http://x", json: {a: 1}, body: text}
  - id: l1
    agent: llm
    with: {model: m, prompt: p, temperature: 5}
  - id: l2
    agent: llm
    with: {model: m}
  - id: p1
    agent: python
    with: {function: "not a target"}
  - id: w1
    agent: workflow
    with: {path: missing.yaml}
  - id: templated
    agent: shell
    with: {command: "{{ inputs.x }}", max_output: "{{ inputs.n }}", output: "{{ inputs.o }}"}
inputs:
  x: {type: string, default: ls}
  n: {type: integer, default: 10}
  o: {type: string, default: text}
"""

EXPECTED = [
    "3:69: agents.api.with.timeout: 'forever' is not a duration",
    "7:26: phases[0].with.command[1] must be a string, not the number 3",
    "10:27: unknown key 'outptu' in the with of phase 's2' (agent type 'shell'); "
    "did you mean 'output'?",
    "13:11: the with of phase 's3' (agent type 'shell') is missing the required key 'command'",
    "16:20: phases[3].with.method: 'FETCH' is not one of 'GET', 'POST'",
    "19:45: phases[4].with.expect_status[0] must be at most 599, not 700",
    "22:49: give either json or body, not both",
    "25:46: phases[6].with.temperature must be at most 2, not 5",
    "28:11: the with of phase 'l2' (agent type 'llm') is missing the required key 'prompt'",
    "31:22: 'not a target' is not 'module:function'",
    "34:18: workflow file 'missing.yaml' not found",
]


def test_every_bad_config_is_reported_at_its_key_in_one_pass(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [
        line[len(str(path)) + 1 :]
        for line in result.output.splitlines()
        if line.startswith(str(path))
    ]
    assert len(lines) == len(EXPECTED), result.output
    for line, expected in zip(lines, EXPECTED, strict=True):
        assert line.startswith(expected), (line, expected)
    assert "Traceback" not in result.output
    assert "37:" not in result.output  # template values are checked at run time, not here


URLS = """\
name: bad-urls
inputs:
  u: {type: string, default: "http://x"}
phases:
  - id: nowhere
    agent: http
    with: {path: /a}
  - id: ftp
    agent: http
    with: {url: "ftp://x/y"}
  - id: words
    agent: http
    with: {url: "not a url"}
  - id: hostless
    agent: http
    with: {base_url: "http:///v1", path: /a}
  - id: model
    agent: llm
    with: {base_url: "localhost:11434/v1", model: m, prompt: p}
  - id: fine
    agent: http
    with: {url: "{{ inputs.u }}"}
  - id: fine2
    agent: llm
    with: {base_url: "http://127.0.0.1:8080/v1", model: m, prompt: p}
"""


def test_where_a_request_goes_is_checked_when_the_url_is_literal(tmp_path):
    path = tmp_path / "urls.yaml"
    path.write_text(URLS)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [
        line[len(str(path)) + 1 :]
        for line in result.output.splitlines()
        if line.startswith(str(path))
    ]
    assert lines == [
        "7:11: the request needs 'url', or 'base_url' and 'path'",
        "10:17: 'ftp://x/y' is not an http or https URL",
        "13:17: 'not a url' is not an http or https URL",
        "16:22: 'http:///v1' has no host",
        "19:22: 'localhost:11434/v1' is not an http or https URL",
    ]
    assert "hint: e.g. url: https://api.example.com/items" in result.output
