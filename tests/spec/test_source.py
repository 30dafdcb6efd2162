"""spec.source: hostile inputs give one located problem and never a traceback (X6)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.errors import OrchError, UnreadableWorkflow, WorkflowError, YAMLSyntaxError
from orchestrator.spec.source import MAX_BYTES, parse_source, read_source


def _problem(raw: bytes) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        parse_source(raw, "w.yaml")
    return info.value


def test_scalars_follow_yaml_1_2_core_schema():
    src = parse_source(
        b"a: 0755\nb: no\nc: on\nd: 0x1f\ne: 0o17\nf: 1e3\ng: ~\nh: 2020-01-01\n"
        b"i: '0755'\nj: !!str 12\nk: !!float 3\nl: '-.inf'\nm: True\nn: 1_000\no:\n",
        "w.yaml",
    )
    d = src.data
    assert d["a"] == 755 and d["b"] == "no" and d["c"] == "on"
    assert d["d"] == 31 and d["e"] == 15 and d["f"] == 1000.0 and d["g"] is None
    assert d["h"] == "2020-01-01" and d["i"] == "0755" and d["j"] == "12"
    assert d["k"] == 3.0 and isinstance(d["k"], float) and d["l"] == "-.inf"
    assert d["m"] is True and d["n"] == "1_000" and d["o"] is None


@pytest.mark.parametrize("text", [b"-.inf", b".NaN", b"!!float .inf", b"1e999", b"9" * 4301])
def test_numbers_json_cannot_carry_are_refused_where_they_are_written(text):
    # YAML 1.2 reads these as numbers; JSON (every output orch writes) has no such number
    with pytest.raises(YAMLSyntaxError) as info:
        parse_source(b"name: x\nl: " + text + b"\n", "w.yaml")
    where = info.value.location
    assert where is not None and (where.line, where.col) == (2, 4)


def test_source_map_is_one_based_for_keys_values_and_items():
    src = parse_source(b"name: x\nphases:\n  - id: a\n    depends_on: [b, c]\n", "w.yaml")
    sm = src.source_map
    assert (sm.key(("name",)).line, sm.key(("name",)).col) == (1, 1)
    assert (sm.value(("name",)).line, sm.value(("name",)).col) == (1, 7)
    assert (sm.value(("phases", 0)).line, sm.value(("phases", 0)).col) == (3, 5)
    assert (
        sm.value(("phases", 0, "depends_on", 1)).line,
        sm.value(("phases", 0, "depends_on", 1)).col,
    ) == (4, 21)
    # a path that is not there falls back to its nearest ancestor
    assert sm.value(("phases", 0, "nope", 3)) == sm.value(("phases", 0))
    assert src.sha256 and len(src.sha256) == 64


def test_merge_keys_and_aliases_are_supported():
    src = parse_source(
        b"base: &b {timeout: 5s, retries: 2}\nphases:\n  - <<: *b\n    id: a\n    retries: 3\n",
        "w.yaml",
    )
    assert src.data["phases"][0] == {"id": "a", "retries": 3, "timeout": "5s"}


@pytest.mark.parametrize(
    ("raw", "kind", "where", "words"),
    [
        (b"a: 1\nb: 2\na: 3\n", YAMLSyntaxError, (3, 1), "duplicate key 'a' (first at line 1)"),
        (b"x:\n  y: 1\n  y: 2\n", YAMLSyntaxError, (3, 3), "duplicate key 'y'"),
        (b"a: !!python/name:os.system x\n", YAMLSyntaxError, (1, 4), "python"),
        (b"a: !!python/object/apply:os.system [ls]\n", YAMLSyntaxError, (1, 4), "not allowed"),
        (b"a: !custom x\n", YAMLSyntaxError, (1, 4), "unknown tag '!custom'"),
        (b"a: !!binary aGVsbG8=\n", YAMLSyntaxError, (1, 4), "unknown tag '!!binary'"),
        (b"a: !!set {x}\n", YAMLSyntaxError, (1, 4), "unknown tag '!!set'"),
        (b"a: &x [1, *x]\n", YAMLSyntaxError, (1, 11), "recursive alias '*x'"),
        (b"a: &x {b: *x}\n", YAMLSyntaxError, (1, 11), "recursive alias"),
        (b"a: *nope\n", YAMLSyntaxError, (1, 4), "unknown alias '*nope'"),
        (b"a: [1, 2\n", YAMLSyntaxError, (2, 1), "invalid YAML"),
        (b"a: 'open\n", YAMLSyntaxError, (2, 1), "invalid YAML"),
        (b"a: 1\n---\nb: 2\n", YAMLSyntaxError, (2, 1), "more than one YAML document"),
        (b"", UnreadableWorkflow, (1, 1), "empty"),
        (b"\n\n   \n# c\n", UnreadableWorkflow, (1, 1), "empty"),
        (b"a: 1\n\x00\x01", UnreadableWorkflow, (2, 1), "binary"),
        (b"a: ok\nb: caf\xc3\x28\n", UnreadableWorkflow, (2, 7), "not valid UTF-8"),
        (b"a: \x1b[31m\n", YAMLSyntaxError, (1, 4), "control character"),
        ('a: "ééé"\nb: \x07'.encode(), YAMLSyntaxError, (2, 4), "control character"),
        ("ééé: !foo x\n".encode(), YAMLSyntaxError, (1, 6), "unknown tag '!foo'"),
        (b"a: !!int nine\n", YAMLSyntaxError, (1, 4), "not a valid !!int"),
        (b"? {a: 1}\n: 2\n", YAMLSyntaxError, (1, 3), "mapping key must be a plain value"),
    ],
)
def test_hostile_yaml_gives_one_located_problem(raw, kind, where, words):
    err = _problem(raw)
    assert isinstance(err, kind)
    assert (err.location.line, err.location.col) == where
    assert words in err.message
    assert err.message[:1].islower()


def test_alias_bomb_is_refused_without_expanding_it():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    err = _problem("\n".join(lines).encode())
    assert isinstance(err, UnreadableWorkflow)
    assert "alias bomb" in err.message
    assert err.location.line <= 12


def test_deep_nesting_is_refused_at_the_level_that_is_too_deep():
    err = _problem(b"a: " + b"[" * 10_000 + b"]" * 10_000)
    assert isinstance(err, UnreadableWorkflow)
    assert "nested more than 100 levels" in err.message
    assert (err.location.line, err.location.col) == (1, 103)
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(300)) + "  " * 300 + "v: 1\n"
    err = _problem(block.encode())
    assert "nested more than 100 levels" in err.message
    assert err.location.line == 101


def test_nesting_through_aliases_is_capped_too():
    lines = ["l0: &l0 " + "[" * 60 + "1" + "]" * 60]
    lines += [f"l{i}: &l{i} " + "[" * 60 + f"*l{i - 1}" + "]" * 60 for i in range(1, 4)]
    err = _problem("\n".join(lines).encode())
    assert "levels deep" in err.message
    assert err.location.line == 2


def test_missing_file_directory_and_size_cap(tmp_path):
    with pytest.raises(UnreadableWorkflow, match="no such file") as info:
        read_source(tmp_path / "nope.yaml")
    assert (info.value.location.line, info.value.location.col) == (1, 1)
    with pytest.raises(UnreadableWorkflow, match="is a directory"):
        read_source(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(UnreadableWorkflow, match="too large"):
        read_source(big)


HOSTILE = {
    "ten_mb.yaml": "('a: ' + 'x' * 11 * 1024 * 1024).encode()",
    "depth.yaml": "b'a: ' + b'[' * 10000 + b']' * 10000",
    "block_depth.yaml": "''.join(' ' * i + 'k:\\n' for i in range(10000)).encode()",
    "bomb.yaml": (
        "'\\n'.join(['a0: &a0 [x,x,x,x,x,x,x,x,x]'] + [f'a{i}: &a{i} [' + ','.join([f'*a{i-1}']"
        " * 9) + ']' for i in range(1, 12)]).encode()"
    ),
    "utf16.yaml": "'name: x'.encode('utf-16')",
    "random.yaml": "bytes(range(1, 256)) * 10",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_through_the_real_command(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(eval(HOSTILE[name]))  # noqa: S307 - test data recipes above
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    problems = json.loads(proc.stdout)
    assert problems and all(p["line"] >= 1 and p["col"] >= 1 for p in problems)
    assert problems[0]["file"] == str(path)


def test_no_foreign_exception_escapes_the_loader():
    corpus = [
        b"{",
        b"]",
        b"a: b: c",
        b"- [",
        b"&a",
        b"*a",
        b"!x",
        b"%YAML 9.9\n---\na",
        b"\t",
        b"a:\n- b\n c",
        b"'",
        b'"\\x"',
        b"? ",
        b"{a: [}",
        b"---\n...\n---",
        b"@",
        b"`",
    ]
    for raw in corpus:
        try:
            parse_source(raw, "w.yaml")
        except OrchError as exc:
            assert exc.location is not None and exc.location.line >= 1


def test_a_file_with_too_many_values_is_refused_without_checking_each(monkeypatch):
    from orchestrator.spec import source

    monkeypatch.setattr(source, "MAX_NODES", 1_000)
    raw = b"phases: [" + b",".join([b"1"] * 1_100) + b"]\n"
    err = _problem(raw)
    assert isinstance(err, UnreadableWorkflow)
    assert "too many values" in err.message
    assert err.location.line == 1
