"""An optional extra that is missing (or broken) is a clear message and exit 2, with the
command that installs it, never a traceback: the real `orch` command, with the extra's
modules made unimportable by a folder on PYTHONPATH that shadows them (as in a venv
`make demo` made, which has the runtime dependencies only)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.extras import DISTRIBUTION

ORCH = str(Path(sys.executable).parent / "orch")

WORKFLOW = "name: plain\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"


def shadow(tmp_path: Path, module: str) -> Path:
    """A folder whose ``module`` (a package) raises ImportError as a missing one does."""
    folder = tmp_path / "shadow"
    package = folder.joinpath(*module.split("."))
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, name={module!r})\n",
        encoding="utf-8",
    )
    return folder


def orch(
    tmp_path: Path, *args: str, shadowed: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "workflows").mkdir(exist_ok=True)
    (tmp_path / "wf.yaml").write_text(WORKFLOW, encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DASK_"))}
    return subprocess.run(
        [ORCH, *args],
        cwd=tmp_path,
        env={
            **environ,
            "PYTHONPATH": str(shadowed),
            "ORCH_STATE_DIR": str(tmp_path / ".orch"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", ["hypercorn", "starlette"])
def test_serve_without_the_server_extra_says_so(tmp_path, module):
    done = orch(
        tmp_path,
        "serve", "--port", "0", "--state-dir", str(tmp_path / ".orch"),
        shadowed=shadow(tmp_path, module),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        f"error: `orch serve` needs the server extra ({module} is missing)\n"
        "  hint: pip install 'orch-workflows[server]'\n"
    )


def test_the_dask_executor_without_distributed_says_so(tmp_path):
    done = orch(
        tmp_path, "run", "wf.yaml", "--executor", "dask", shadowed=shadow(tmp_path, "distributed")
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        "error: --executor dask needs Dask, which is not installed (distributed is missing)\n"
        "  hint: install the extra: pip install 'orch-workflows[dask]'\n"
    )


def test_tracing_without_the_otlp_exporter_is_a_warning_and_the_run_goes_on(tmp_path):
    # the SDK imports, the exporter package (the extra's other half) does not
    done = orch(
        tmp_path, "run", "wf.yaml",
        shadowed=shadow(tmp_path, "opentelemetry.exporter"),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        "warning: tracing is asked for (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER),"
        " but OpenTelemetry is not installed (opentelemetry.exporter is missing)"
    ) in done.stderr
    assert "hint: pip install 'orch-workflows[otel]', or unset the OTEL_ variables" in done.stderr


ROOT = Path(__file__).resolve().parents[2]


def test_every_install_hint_names_the_distribution_orch_is_published_as():
    # `orch` on PyPI is someone else's project: pip install 'orch[server]' installs that
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    name = re.search(r'^name = "([^"]+)"', pyproject, re.MULTILINE)
    assert name is not None
    assert name.group(1) == DISTRIBUTION == "orch-workflows"
    texts = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "orchestrator").rglob("*.py"),
    ]
    hints: list[tuple[str, str]] = []
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert re.search(r"(?<![\w-])orch\[", text) is None, path
        hints += [(path.name, m) for m in re.findall(r"pip install '([^'\[]+)\[", text)]
    assert {"README.md"} < {where for where, _ in hints}
    assert {dist for _, dist in hints} <= {"orch-workflows", "{DISTRIBUTION}"}
