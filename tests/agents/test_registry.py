"""AgentRegistry with real distributions: dist-info folders read by importlib.metadata."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from orchestrator.agents import ENTRY_POINT_GROUP, Agent, AgentRegistry, AgentResult
from orchestrator.errors import AgentLoadError, AgentNotFound

GOOD = """
from orchestrator.agents import Agent, AgentResult

class Hello(Agent):
    name = "hello"
    description = "Says hello."
    config_schema = {"type": "object", "properties": {"who": {"type": "string"}}}

    async def run(self, input, ctx):
        return AgentResult(output="hello " + input.get("who", "you"))

class Misnamed(Hello):
    name = "other"

class SyncRun(Hello):
    name = "syncrun"
    def run(self, input, ctx):
        return None

class BadSchema(Hello):
    name = "badschema"
    config_schema = {"type": "nonsense"}

not_a_class = 3
"""


def make_site(root: Path, dists: dict[str, tuple[str, dict[str, str]]], modules: dict[str, str]):
    """Write installed distributions (dist-info with entry points) and modules under ``root``.

    ``dists`` maps "name-version" to (unused, {entry name: "module:attr"}).
    """
    root.mkdir(parents=True, exist_ok=True)
    for dist, (_, eps) in dists.items():
        name, version = dist.rsplit("-", 1)
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{k} = {v}\n" for k, v in eps.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    for module, text in modules.items():
        (root / f"{module}.py").write_text(text)
    return root


def entry_points(root: Path):
    return [
        ep
        for dist in importlib.metadata.distributions(path=[str(root)])
        for ep in dist.entry_points
        if ep.group == ENTRY_POINT_GROUP
    ]


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = make_site(
        tmp_path / "site",
        {
            "hello-plugin-1.2": (
                "",
                {
                    "hello": "reg_good:Hello",
                    "misnamed": "reg_good:Misnamed",
                    "syncrun": "reg_good:SyncRun",
                    "badschema": "reg_good:BadSchema",
                    "notclass": "reg_good:not_a_class",
                    "broken": "reg_broken:Agent",
                    "missing": "reg_good:Nothing",
                },
            ),
        },
        {"reg_good": GOOD, "reg_broken": "raise RuntimeError('plugin exploded')\n"},
    )
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("reg_good", "reg_broken"):
        sys.modules.pop(name, None)


def test_listing_imports_nothing_and_resolve_loads_once(site):
    registry = AgentRegistry.from_entry_points(entry_points=entry_points(site))
    assert "hello" in registry.names()
    assert "reg_good" not in sys.modules  # lazy: nothing imported to list
    cls = registry.resolve("hello")
    assert registry.resolve("hello") is cls
    info = registry.info("hello")
    assert (info.dist, info.version, info.source) == ("hello-plugin", "1.2", "reg_good:Hello")
    assert info.description == "Says hello."


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("misnamed", "declares name 'other' but is registered as 'misnamed'"),
        ("syncrun", "has no `async def run(self, input, ctx)`"),
        ("badschema", "has an invalid config_schema"),
        ("notclass", "is not a class"),
    ],
)
def test_each_type_is_checked_when_loaded(site, name, message):
    registry = AgentRegistry.from_entry_points(entry_points=entry_points(site))
    with pytest.raises(AgentLoadError) as info:
        registry.resolve(name)
    assert message in str(info.value)
    assert "from hello-plugin" in str(info.value)


def test_a_plugin_that_fails_to_import_names_its_entry_point_and_distribution(site):
    registry = AgentRegistry.from_entry_points(entry_points=entry_points(site))
    with pytest.raises(AgentLoadError) as info:
        registry.resolve("broken")
    message = (
        "agent type 'broken' failed to load from the entry point "
        "'broken = reg_broken:Agent' of hello-plugin 1.2: RuntimeError: plugin exploded"
    )
    assert info.value.headline == message
    assert str(info.value) == message + "\n  hint: fix or uninstall hello-plugin"  # a traceback
    assert isinstance(info.value.__cause__, RuntimeError)
    assert registry.info("broken").error == message  # `orch agents` shows it on one line
    # the others still work
    assert registry.resolve("hello").name == "hello"
    with pytest.raises(AgentLoadError, match="AttributeError"):
        registry.resolve("missing")


def test_two_distributions_registering_one_name_is_an_error(tmp_path, monkeypatch):
    root = make_site(
        tmp_path / "site",
        {
            "first-1.0": ("", {"hello": "reg_good:Hello"}),
            "second-2.0": ("", {"hello": "reg_good:Hello"}),
        },
        {"reg_good": GOOD},
    )
    monkeypatch.syspath_prepend(str(root))
    registry = AgentRegistry.from_entry_points(entry_points=entry_points(root))
    with pytest.raises(AgentLoadError) as info:
        registry.resolve("hello")
    assert "registered by two distributions" in str(info.value)
    assert "first" in str(info.value) and "second" in str(info.value)
    sys.modules.pop("reg_good", None)


def test_unknown_names_suggest_a_close_one():
    registry = AgentRegistry.from_entry_points()
    with pytest.raises(AgentNotFound) as info:
        registry.resolve("shel")
    assert info.value.hint == "did you mean 'shell'?"


def test_registries_are_instances_and_register_checks_too():
    class Mine(Agent):
        name = "mine"

        async def run(self, input, ctx):
            return AgentResult(output=1)

    class Sync(Agent):
        name = "sync"

        def run(self, input, ctx):  # type: ignore[override]
            return 1

    one, two = AgentRegistry(), AgentRegistry()
    one.register(Mine)
    assert "mine" in one and "mine" not in two
    assert one.info("mine").dist is None
    with pytest.raises(AgentLoadError, match="async def run"):
        one.register(Sync)
    assert "sync" not in one

    class Other(Mine):
        pass

    with pytest.raises(AgentLoadError, match="already registered"):
        one.register(Other)


BUILTINS = ["echo", "fail", "http", "llm", "noop", "python", "shell", "sleep", "workflow"]


def test_every_builtin_is_an_entry_point_with_a_described_config():
    registry = AgentRegistry.from_entry_points()
    assert set(BUILTINS) <= set(registry.names())

    def described(schema, where):
        for key, prop in (schema.get("properties") or {}).items():
            assert prop.get("description"), f"{where}.{key} has no description"
            described(prop, f"{where}.{key}")
        if isinstance(schema.get("items"), dict):
            described(schema["items"], where + "[]")

    for name in BUILTINS:
        info = registry.info(name)
        assert info.error is None
        assert info.dist == "orch-workflows"
        assert info.description
        assert info.source.startswith("orchestrator.agents.builtin.")
        assert info.config_schema is not None
        described(info.config_schema, name)


def test_the_same_entry_point_seen_twice_is_not_a_conflict(site):
    """Editable installs can list one distribution's entry point twice."""
    eps = entry_points(site)
    registry = AgentRegistry.from_entry_points(entry_points=eps + eps)
    assert registry.resolve("hello").name == "hello"
