"""`make demo`: start the fake model server, then validate, draw and run the team workflow.

    python examples/run_demo.py [extra `orch run` arguments]

Uses the `orch` next to this Python (the project's .venv), else the one on PATH.
The server lives only as long as this script; the llm agents find it through
OPENAI_BASE_URL. Exit code: the run's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_llm import start  # noqa: E402 (this folder is not a package)

WORKFLOW = HERE.parent / "workflows" / "llm-team-demo.yaml"


def main(argv: list[str]) -> int:
    """Run the three steps a newcomer would; return the run's exit code."""
    orch = shutil.which("orch", path=str(Path(sys.executable).parent)) or "orch"
    server, url = start()
    env = {**os.environ, "OPENAI_BASE_URL": url}
    print(f"# a fake OpenAI-compatible model answers at {url} (examples/fake_llm.py)\n")
    try:
        for step in (["validate"], ["graph"], ["run", *argv]):
            here = Path.cwd()
            shown = WORKFLOW.relative_to(here) if WORKFLOW.is_relative_to(here) else WORKFLOW
            print(f"$ orch {' '.join(step)} {shown}", flush=True)
            code = subprocess.run([orch, step[0], str(WORKFLOW), *step[1:]], env=env).returncode
            print(flush=True)
            if code != 0:
                return code
        return 0
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
