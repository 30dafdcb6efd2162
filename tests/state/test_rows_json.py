"""The state store writes the data of its most frequent events (``phase_started``,
``phase_completed``) by a shortcut of its own (state/rows.py): the text must be what
the JSON encoder writes for any data, and anything the shortcut does not know goes to
the encoder (its errors included)."""

from __future__ import annotations

import math

import pytest

from orchestrator import events as ev
from orchestrator.jsontext import NotJson, dumps
from orchestrator.state.rows import _prepare


def _spill(run: str, phase: str, text: str) -> str:
    raise AssertionError("no output here is big enough to spill")


def _text(event: ev.Event) -> str | None:
    return _prepare(event, _spill)[0][5]


OUTPUTS = [
    None,
    "plain",
    'quotes " and \\ and\nnew lines\tand é, 雪, 🙂 and \x00',
    {"nested": {"list": [1, 2.5, None, True, "x"]}, "n": -3},
    [1, "two", {"three": 3.0}],
    0,
    1.5e-7,
    12345678901234567890,
    True,
    "",
    {},
]
METADATA = [
    {},
    {"model": "gpt-x", "tokens": {"prompt": 3, "completion": 4, "total": 7}},
    {"cost": 0.0012},
]


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("metadata", METADATA)
def test_phase_completed_data_is_written_as_the_encoder_writes_it(output, metadata):
    for duration, attempts, fallback_used, cached in (
        (0.2089252471923828, 1, False, False),
        (1e-9, 3, True, False),
        (12345.0, 2, False, True),
        (0.0, 0, True, True),
    ):
        event = ev.phase_completed(
            "r1",
            1000.5,
            "a",
            attempts or None,
            output=output,
            duration=duration,
            attempts=attempts,
            fallback_used=fallback_used,
            cached=cached,
            metadata=metadata,
        )
        assert _text(event) == dumps(event.data, compact=True)


def test_phase_completed_data_of_another_shape_goes_to_the_encoder():
    base = ev.phase_completed("r1", 1.0, "a", 1, output="x", duration=0.5, attempts=1)
    for changed in (
        {"duration": None},  # no duration
        {"duration": 2},  # an int
        {"attempts": True},  # a bool is an int to isinstance, not to JSON
        {"status": "completed\n"},
        {"metadata": {"bad": float("nan")}},
    ):
        data = {**base.data, **changed}
        event = ev.Event("phase_completed", "r1", 1.0, "a", 1, data)
        if "bad" in changed.get("metadata", {}):
            with pytest.raises(NotJson):
                _text(event)
        else:
            assert _text(event) == dumps(data, compact=True)
    extra = ev.Event("phase_completed", "r1", 1.0, "a", 1, {**base.data, "item_errors": [1]})
    assert _text(extra) == dumps(extra.data, compact=True)
    for number in (math.nan, math.inf):  # refused as the encoder refuses it
        bad = ev.Event("phase_completed", "r1", 1.0, "a", 1, {**base.data, "duration": number})
        with pytest.raises(NotJson):
            _text(bad)


@pytest.mark.parametrize("agent", ["noop", 'we "quote"\n', "é雪🙂", ""])
def test_phase_started_data_is_written_as_the_encoder_writes_it(agent):
    plain = ev.phase_started("r1", 1.0, "a", 1, agent=agent)
    assert _text(plain) == dumps(plain.data, compact=True)
    fuller = ev.phase_started("r1", 1.0, "a", 1, agent=agent, items=3, path="sub.yaml")
    assert _text(fuller) == dumps(fuller.data, compact=True)
