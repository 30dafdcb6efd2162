"""resolve_inputs: typed run inputs from --input strings or from a mapping."""

from __future__ import annotations

import pytest

from orchestrator.engine import resolve_inputs, run_sync
from orchestrator.errors import UsageError

from .conftest import make_plan, make_workflow

DECLARED = {
    "name": {"type": "string", "required": True},
    "count": {"type": "integer", "default": 2},
    "ratio": {"type": "number"},
    "dry": {"type": "boolean", "default": False},
    "regions": {"type": "array", "default": ["eu", "us"]},
    "extra": {"type": "object"},
}
WF = make_workflow([{"id": "a", "agent": "noop"}], inputs=DECLARED)


def test_strings_are_parsed_by_declared_type_and_defaults_apply():
    got = resolve_inputs(
        WF,
        {"name": "acme", "count": "5", "ratio": "0.5", "dry": "yes", "extra": '{"k": [1]}'},
        strings=True,
    )
    assert got == {
        "name": "acme",
        "count": 5,
        "ratio": 0.5,
        "dry": True,
        "regions": ["eu", "us"],
        "extra": {"k": [1]},
    }


@pytest.mark.parametrize(
    ("provided", "message"),
    [
        ({}, "missing required input 'name' (string)"),
        ({"name": "a", "cuont": "1"}, "unknown input 'cuont'"),
        ({"name": "a", "count": "many"}, "input 'count' must be an integer, got text 'many'"),
        ({"name": "a", "dry": "maybe"}, "input 'dry' must be a boolean, got text 'maybe'"),
        ({"name": "a", "regions": "eu,us"}, "input 'regions' must be an array, got text 'eu,us'"),
        ({"name": "a", "ratio": "1.2.3"}, "input 'ratio' must be a number, got text '1.2.3'"),
    ],
)
def test_bad_strings_name_the_input(provided, message):
    with pytest.raises(UsageError) as info:
        resolve_inputs(WF, provided, strings=True)
    assert info.value.message == message


def test_unknown_input_suggests_the_closest_name():
    with pytest.raises(UsageError) as info:
        resolve_inputs(WF, {"name": "a", "cuont": 1})
    assert info.value.hint == "did you mean 'count'?"


def test_values_from_a_mapping_are_checked_not_coerced():
    assert resolve_inputs(WF, {"name": "a", "count": 3})["count"] == 3
    with pytest.raises(UsageError, match="input 'count' must be an integer, got a boolean 'true'"):
        resolve_inputs(WF, {"name": "a", "count": True})
    with pytest.raises(UsageError, match="input 'name' must be a string, got an integer '7'"):
        resolve_inputs(WF, {"name": 7})
    # in the words of the input types (JSON's), not Python's (dict, list, NoneType)
    with pytest.raises(UsageError, match="must be an array, got an object '{\"a\": 1}'"):
        resolve_inputs(WF, {"name": "a", "regions": {"a": 1}})
    with pytest.raises(UsageError, match="input 'name' must be a string, got an array"):
        resolve_inputs(WF, {"name": ["x"]})


def test_the_engine_refuses_bad_inputs_before_anything_runs(registry):
    plan = make_plan([{"id": "a", "agent": "noop"}], inputs=DECLARED)
    events = []
    with pytest.raises(UsageError, match="missing required input 'name'"):
        run_sync(plan, registry=registry, sinks=[events.append])
    assert events == []
