"""AgentRegistry: agent types found through entry points, loaded lazily, checked when loaded.

``AgentRegistry.from_entry_points()`` reads the group ``orchestrator.agents``
without importing anything; ``resolve(name)`` imports one entry point once and
checks it (a name, a valid config schema, an async ``run``) before recording it.
A plugin that fails to import or to pass the checks fails only the workflows that
use it, with an AgentLoadError naming the entry point and its distribution. Two
distributions registering one name is an error. There is no global registry.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import AgentLoadError, AgentNotFound
from .base import Agent

if TYPE_CHECKING:
    import importlib.metadata

__all__ = ["ENTRY_POINT_GROUP", "AgentInfo", "AgentRegistry", "EntryPointLike", "read_entry_points"]

ENTRY_POINT_GROUP = "orchestrator.agents"


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What ``orch agents`` shows of one agent type. ``error`` is set when it cannot load."""

    name: str
    source: str  # "module:attr" of the entry point, or the class for register()
    dist: str | None
    version: str | None
    description: str = ""
    config_schema: Mapping[str, Any] | None = None
    error: str | None = None


class EntryPointLike(Protocol):
    """What the registry reads of an entry point (importlib.metadata's, or the fast reader's)."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def dist(self) -> Any: ...  # with .name and .version, or None
    def load(self) -> Any: ...


@dataclass(slots=True)
class _Entry:
    name: str
    source: str
    dist: str | None
    version: str | None
    entry_point: EntryPointLike | None = None
    loaded: type[Agent] | None = None
    conflict: str | None = None


class AgentRegistry:
    """A set of agent types by name. Build one per process (or per test); never global."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    @classmethod
    def from_entry_points(
        cls,
        group: str = ENTRY_POINT_GROUP,
        entry_points: Iterable[EntryPointLike | importlib.metadata.EntryPoint] | None = None,
    ) -> AgentRegistry:
        """A registry of every entry point in ``group``; nothing is imported yet.

        ``entry_points`` replaces the installed ones (``read_entry_points(group)``; tests
        pass importlib.metadata's or fakes).
        """
        registry = cls()
        eps = entry_points if entry_points is not None else read_entry_points(group)
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            known = registry._entries.get(ep.name)
            if known is not None:
                if known.source == ep.value and known.dist == dist:
                    continue  # the same entry point seen twice (editable installs do this)
                known.conflict = (
                    f"agent type '{ep.name}' is registered by two distributions: "
                    f"{known.dist or '?'} ({known.source}) and {dist or '?'} ({ep.value}); "
                    "uninstall one of them"
                )
                continue
            registry._entries[ep.name] = _Entry(ep.name, ep.value, dist, version, ep)
        return registry

    def register(self, agent_cls: type[Agent], name: str | None = None) -> None:
        """Add an agent type directly (tests, embedding). Raises AgentLoadError if it fails
        the checks, or if the name is taken by another class."""
        type_name: str = name or str(getattr(agent_cls, "name", ""))
        source = f"{agent_cls.__module__}:{agent_cls.__qualname__}"
        _check(agent_cls, type_name, source, None)
        known = self._entries.get(type_name)
        if known is not None and known.loaded is not agent_cls:
            raise AgentLoadError(
                f"agent type '{type_name}' is already registered by {known.source}"
            )
        self._entries[type_name] = _Entry(type_name, source, None, None, loaded=agent_cls)

    def names(self) -> list[str]:
        """Every registered type name, sorted; nothing is imported."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def resolve(self, name: str) -> type[Agent]:
        """The agent class for ``name``, imported and checked on first use.

        Raises AgentNotFound (with a suggestion) or AgentLoadError.
        """
        entry = self._entries.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "run 'orch agents' to list them"
            raise AgentNotFound(f"unknown agent type '{name}'", hint=hint)
        if entry.conflict:
            raise AgentLoadError(entry.conflict)
        if entry.loaded is None:
            assert entry.entry_point is not None
            dist = f"{entry.dist} {entry.version}" if entry.dist else "an unknown distribution"
            where = f"entry point '{name} = {entry.source}' of {dist}"
            try:
                obj = entry.entry_point.load()
            except Exception as exc:  # a plugin's import may raise anything
                raise AgentLoadError(
                    f"agent type '{name}' failed to load from the {where}: "
                    f"{type(exc).__name__}: {exc}",
                    hint=f"fix or uninstall {entry.dist or 'the plugin'}",
                ) from exc
            _check(obj, name, entry.source, entry.dist)
            entry.loaded = obj
        return entry.loaded

    def create(self, name: str, instance_name: str = "") -> Agent:
        """A new instance of agent type ``name``; raises like resolve."""
        return self.resolve(name)(instance_name or name)

    def info(self, name: str) -> AgentInfo:
        """Provenance, description and schema of one type; load errors become ``error``."""
        entry = self._entries[name]
        try:
            cls = self.resolve(name)
        except AgentLoadError as exc:
            return AgentInfo(name, entry.source, entry.dist, entry.version, error=exc.headline)
        return AgentInfo(
            name,
            entry.source,
            entry.dist,
            entry.version,
            description=getattr(cls, "description", "") or (inspect.getdoc(cls) or ""),
            config_schema=cls.config_schema,
        )


def _check(obj: Any, name: str, source: str, dist: str | None) -> None:
    """Refuse an object that is not a usable agent type, naming where it came from."""
    where = f"'{source}'" + (f" from {dist}" if dist else "")

    def fail(what: str) -> AgentLoadError:
        return AgentLoadError(f"agent type '{name}' ({where}) {what}")

    if not inspect.isclass(obj):
        raise fail("is not a class")
    declared = getattr(obj, "name", None)
    if not isinstance(declared, str) or not declared:
        raise fail("has no `name`")
    if declared != name:
        raise fail(f"declares name '{declared}' but is registered as '{name}'")
    run = getattr(obj, "run", None)
    if run is None or not inspect.iscoroutinefunction(run):
        raise fail("has no `async def run(self, input, ctx)`")
    schema = getattr(obj, "config_schema", None)
    if not isinstance(schema, Mapping):
        raise fail("has no `config_schema` mapping")
    from ..spec.schema import check_agent_schema  # spec.schema owns jsonschema

    problem = check_agent_schema(schema)
    if problem:
        raise fail(f"has an invalid config_schema: {problem}")


# -- reading installed entry points without importlib.metadata ----------------------
# importlib.metadata costs about as much as the rest of `orch validate` together
# (email, zipfile, csv and a scan of every distribution). The registry needs one
# group: read the entry_points.txt files of the distributions on sys.path directly,
# with importlib.metadata's rules (the first distribution of a name on sys.path wins).


@dataclass(frozen=True, slots=True)
class _Dist:
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class _EntryPoint:
    """An installed entry point, read from its distribution's entry_points.txt."""

    name: str
    value: str
    dist: _Dist

    def load(self) -> Any:
        """Import the module and get the attribute, as importlib.metadata.EntryPoint.load."""
        import importlib

        module_name, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj


_SECTION = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*$")


def read_entry_points(group: str, path: Iterable[str] | None = None) -> list[_EntryPoint]:
    """The entry points of ``group`` installed on ``path`` (default ``sys.path``), in order.

    Distributions are ``*.dist-info`` and ``*.egg-info`` folders; a name seen earlier
    on the path hides later ones, as importlib.metadata does.
    """
    found: list[_EntryPoint] = []
    seen: set[str] = set()
    for folder, info in _distributions(sys.path if path is None else path):
        base = info.rsplit(".", 1)[0]
        name_part = base.split("-", 1)[0]
        key = re.sub(r"[-_.]+", "_", name_part).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            with open(os.path.join(folder, info, "entry_points.txt"), encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue
        if f"[{group}]" not in text.replace(" ", ""):
            continue
        dist = _read_dist(os.path.join(folder, info), base)
        found.extend(_EntryPoint(n, v, dist) for n, v in _section(text, group))
    return found


def _distributions(path: Iterable[str]) -> Iterator[tuple[str, str]]:
    for folder in path:
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:  # missing, a file, a zip: nothing to read here
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                yield folder or ".", name


def _section(text: str, group: str) -> Iterator[tuple[str, str]]:
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        header = _SECTION.match(line)
        if header:
            current = header.group(1)
        elif current == group and "=" in stripped:
            name, _, value = stripped.partition("=")
            yield name.strip(), value.strip()


def _read_dist(info: str, base: str) -> _Dist:
    """Name and Version from the metadata headers (the folder name as a fallback)."""
    fallback_name, _, fallback_version = base.partition("-")
    fields = {"name": fallback_name, "version": fallback_version}
    for file in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(info, file), encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        break  # the headers end at the first blank line
                    key, sep, value = line.partition(":")
                    if sep and key.strip().lower() in fields:
                        fields[key.strip().lower()] = value.strip()
            break
        except OSError:
            continue
    return _Dist(fields["name"], fields["version"])
