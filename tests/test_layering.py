"""The layering rules of style.md 7.4, checked on the real interpreter."""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_importing_every_core_module_loads_neither_rich_nor_typer():
    # Every module outside cli/ and render/, found by walking the package.
    # (pkgutil.walk_packages would import cli/ itself to look inside, so walk the files.)
    code = (
        "import importlib, pathlib, orchestrator\n"
        "root = pathlib.Path(orchestrator.__file__).parent\n"
        "for f in sorted(root.rglob('*.py')):\n"
        "    parts = f.relative_to(root.parent).with_suffix('').parts\n"
        "    if parts[1] in ('cli', 'render', '__main__'):\n"
        "        continue\n"
        "    importlib.import_module('.'.join(p for p in parts if p != '__init__'))\n"
    )
    loaded = _modules_after(code)
    assert "orchestrator.engine.runner" in loaded or "orchestrator.engine" in loaded
    assert "orchestrator.state.sqlite" in loaded
    leaked = sorted(m for m in loaded if m.split(".")[0] in {"rich", "typer", "click"})
    assert leaked == []
    assert not any(m.startswith(("orchestrator.cli", "orchestrator.render")) for m in loaded)


def test_importing_the_core_loads_neither_rich_nor_typer():
    loaded = _modules_after(
        "import orchestrator, orchestrator.spec, orchestrator.plan, orchestrator.engine,"
        " orchestrator.agents, orchestrator.expr"
    )
    leaked = sorted(m for m in loaded if m.split(".")[0] in {"rich", "typer", "click"})
    assert leaked == []


def test_importing_the_package_loads_no_heavy_library():
    loaded = _modules_after("import orchestrator")
    heavy = {"rich", "typer", "httpx", "jsonschema", "tenacity", "jinja2", "ruamel", "sqlite3"}
    assert sorted(m for m in loaded if m.split(".")[0] in heavy) == []


def test_rendering_does_not_load_the_cli():
    loaded = _modules_after("import orchestrator.render.graph")
    assert sorted(m for m in loaded if m.split(".")[0] in {"typer", "click"}) == []
    assert "orchestrator.cli" not in loaded


def test_orch_help_loads_only_typer_and_the_core():
    # `orch --help` must stay fast: every command imports its heavy libraries inside itself.
    code = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        "sys.argv = ['orch', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    loaded = _modules_after(code)
    heavy = {"rich", "httpx", "jsonschema", "tenacity", "jinja2", "ruamel", "sqlite3"}
    assert sorted({m.split(".")[0] for m in loaded} & heavy) == []


def test_the_service_is_imported_only_by_orch_serve():
    # `orch serve` imports starlette and hypercorn inside itself; no other command may.
    loaded = _modules_after(
        "import orchestrator, orchestrator.cli, orchestrator.engine, orchestrator.spec"
    )
    assert sorted(m for m in loaded if m.startswith("orchestrator.service")) == []
    assert sorted(m for m in loaded if m.split(".")[0] in {"starlette", "hypercorn"}) == []
    # `orch schedule` reads the workflows folder without the web stack
    loaded = _modules_after(
        "from orchestrator.cli.serve import schedule_command\n"
        "from orchestrator.service.catalog import Catalog\n"
        "from orchestrator.service.scheduler import upcoming\n"
    )
    assert (
        sorted(m for m in loaded if m.split(".")[0] in {"starlette", "hypercorn", "jinja2"}) == []
    )


def test_the_service_loads_no_rich_and_no_render_module():
    # The service's log lines are `orch logs` lines (orchestrator.eventlines): plain text.
    loaded = _modules_after("import orchestrator.service.app, orchestrator.service.server")
    assert "orchestrator.service.app" in loaded and "orchestrator.eventlines" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in {"rich", "typer", "click"}) == []
    assert (
        sorted(m for m in loaded if m.startswith(("orchestrator.render", "orchestrator.cli"))) == []
    )


def test_no_core_module_imports_rendering_even_inside_a_function():
    # The import-time checks above miss an import inside a function (the service's /logs
    # route once imported orchestrator.render.tables, so serving a log loaded rich).
    import ast
    from pathlib import Path

    import orchestrator

    root = Path(orchestrator.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[1] in ("cli", "render", "__main__"):
            continue
        package = parts[:-1]  # a module's package; an __init__'s is its own
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else ()
                module = (*base, *(node.module.split(".") if node.module else ()))
                names = [".".join((*module, alias.name)) for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")
                if top[0] in ("rich", "typer", "click") or top[:2] in (
                    ["orchestrator", "render"],
                    ["orchestrator", "cli"],
                ):
                    found.append(f"{'/'.join(parts)}.py:{node.lineno} imports {name}")
    assert found == []
