"""The optional extras (pyproject.toml's ``[project.optional-dependencies]``): the
modules each one's command imports, whether they import here, and the command
that installs one (naming the distribution, ``DISTRIBUTION``, in one place).

A command that needs an extra asks ``missing_module`` first, with every module it
will import (not one module of orch's that happens to need none of them), so a
missing or broken extra is a clear message (exit 2), never a traceback later on.
"""

from __future__ import annotations

import importlib

__all__ = [
    "DISTRIBUTION",
    "EXTRA_MODULES",
    "install_command",
    "installed_version",
    "missing_module",
]

#: The distribution orch is installed as (pyproject.toml's [project] name; a test checks
#: they agree): every install hint names it (``orch`` on PyPI is someone else's project),
#: and ``orch --version`` reads its version from it.
DISTRIBUTION = "orch-workflows"


def installed_version() -> str:
    """The version orch is installed as (``orch --version``): ``orchestrator/_version.py``,
    which hatchling writes from pyproject.toml's version at every build and install; else
    (installed by another build backend) the distribution's metadata, which costs some
    50 ms at start-up; ``unknown`` for a source tree that is not installed."""
    try:
        from ._version import __version__
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(DISTRIBUTION)
        except PackageNotFoundError:
            return "unknown"
    return str(__version__)


#: The third-party modules each extra's command imports (orch serve; --executor dask;
#: the OTEL_ variables). Keep in step with the imports of service/app.py, service/ui.py,
#: service/server.py, engine/dask_executor.py and tracing.py.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": (
        "starlette.applications",
        "starlette.requests",
        "starlette.responses",
        "starlette.routing",
        "starlette.staticfiles",
        "hypercorn.asyncio",
        "hypercorn.config",
    ),
    "dask": (
        "dask",
        "distributed",
        "distributed.protocol",
        "distributed.diagnostics.plugin",
    ),
    "otel": (
        "opentelemetry.trace",
        "opentelemetry.trace.propagation.tracecontext",
        "opentelemetry.sdk.resources",
        "opentelemetry.sdk.trace",
        "opentelemetry.sdk.trace.export",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ),
}


def install_command(extra: str) -> str:
    """The command that installs ``extra``: ``pip install 'orch-workflows[server]'``."""
    if extra not in EXTRA_MODULES:
        raise KeyError(extra)
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def missing_module(extra: str) -> str | None:
    """The name of the first module of ``extra`` that does not import (not installed, or
    broken: its own ImportError's module), None when every one imports."""
    for name in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return exc.name or name
    return None
