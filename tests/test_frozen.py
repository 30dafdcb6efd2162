"""quick_init: the frozen dataclasses made on every phase build faster and behave exactly
as the dataclass they are (same signature, defaults, errors, frozenness, copies; pickling
is checked on the engine's own classes: a class local to a test cannot be pickled)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import typing
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.engine.executor import CallSpec
from orchestrator.engine.result import PhaseOutcome
from orchestrator.events import Event
from orchestrator.frozen import quick_init


def _pair() -> tuple[type[Any], type[Any]]:
    """The same frozen class twice: as the dataclass made it, and with quick_init."""

    def make() -> type[Any]:
        @dataclass(frozen=True, slots=True)
        class Value:
            name: str
            count: int
            label: str | None = None
            items: list[int] = field(default_factory=list)
            extra: dict[str, Any] = field(default_factory=dict)

        return Value

    return make(), quick_init(make())


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


def _error(cls: type[Any], *args: Any, **kwargs: Any) -> str:
    with pytest.raises(TypeError) as info:
        cls(*args, **kwargs)
    return str(info.value)


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a", 1), {}),
    (("a", 1, "x", [1], {"k": 2}), {}),
    (("a",), {"count": 2, "extra": {"z": 1}}),
    ((), {"name": "a", "count": 3, "label": None, "items": [4, 5]}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_a_quick_init_instance_equals_the_dataclass_one(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    plain, quick = _pair()
    made, expected = quick(*args, **kwargs), plain(*args, **kwargs)
    assert _fields(made) == _fields(expected)
    assert repr(made).split("(", 1)[1] == repr(expected).split("(", 1)[1]
    assert made == quick(*args, **kwargs)


def test_each_instance_gets_its_own_default_from_the_factory() -> None:
    _, quick = _pair()
    first, second = quick("a", 1), quick("b", 2)
    assert first.items == [] and first.items is not second.items
    assert first.extra is not second.extra


def test_the_signature_and_the_argument_errors_are_the_dataclasses() -> None:
    plain, quick = _pair()
    assert str(inspect.signature(quick)) == str(inspect.signature(plain))
    wrong: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {}),
        (("a",), {}),
        (("a", 1), {"nope": 1}),
        (("a", 1, 2, 3, 4, 5), {}),
    ]
    for args, kwargs in wrong:
        assert _error(quick, *args, **kwargs) == _error(plain, *args, **kwargs)
    assert _error(quick, "a", 1, name="b") == _error(plain, "a", 1, name="b")


def test_it_stays_frozen_and_copies_as_a_dataclass() -> None:
    _, quick = _pair()
    value = quick("a", 1, items=[1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.name = "b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del value.count
    changed = dataclasses.replace(value, count=2)
    assert (changed.name, changed.count, changed.items) == ("a", 2, [1])


@pytest.mark.parametrize("cls", [Event, PhaseOutcome, CallSpec])
def test_the_engines_values_keep_the_dataclass_signature_and_stay_frozen(cls: type[Any]) -> None:
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default
        elif f.default_factory is not dataclasses.MISSING:
            assert repr(p.default) == "<factory>"
        else:
            assert p.default is inspect.Parameter.empty
    required = {p.name: p.name for p in params if p.default is inspect.Parameter.empty}
    value = cls(**required)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, fields[0].name, "changed")
    assert pickle.loads(pickle.dumps(value)) == value  # CallSpec travels to Dask workers


def test_a_class_it_cannot_serve_is_refused_at_once() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        a: int

    for cls in (Mutable, NoSlots, Checked, KeywordOnly):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)


def test_the_annotations_resolve_as_the_dataclasses() -> None:
    plain, quick = _pair()
    assert typing.get_type_hints(quick.__init__) == typing.get_type_hints(plain.__init__)
    for cls in (Event, PhaseOutcome, CallSpec):  # documentation tools read them
        hints = typing.get_type_hints(cls.__init__)
        assert set(hints) == {f.name for f in dataclasses.fields(cls)} | {"return"}


def test_fields_inherited_from_a_frozen_base_are_set_too() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int
        b: str = "x"

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Child(Base):
        c: list[int] = field(default_factory=list)

    value = Child(1, c=[2])
    assert (value.a, value.b, value.c) == (1, "x", [2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.a = 2


def test_a_field_called_self_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Odd:
        self: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="quick_init"):
        quick_init(Odd)


def test_a_class_without_fields_builds() -> None:
    @quick_init
    @dataclass(frozen=True, slots=True)
    class Empty:
        pass

    assert Empty() == Empty()
    with pytest.raises(TypeError):
        Empty(1)  # type: ignore[call-arg]
