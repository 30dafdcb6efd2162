"""docs/internals.md opens with the core on one page (issue 8: "describes the new core in
one page"), the reference sections after it; the files it points at exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERNALS = ROOT / "docs" / "internals.md"


def overview() -> str:
    text = INTERNALS.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    assert sections[1].startswith("The core in one page\n"), sections[1][:80]
    return "## " + sections[1]


def test_the_page_opens_with_a_one_page_overview_of_the_core():
    page = overview()
    head = INTERNALS.read_text(encoding="utf-8").split("\n## ", 2)
    assert len((head[0] + "\n## " + head[1]).splitlines()) <= 80  # one screenful or two
    for part in (
        "run context",
        "agent-call path",
        "event contract and the bus",
        "executor seam",
        "Resume is a service of the core",
        "Python API and who drives the core",
    ):
        assert part in page, part
    # the reference sections follow it, none lost
    assert len(re.findall(r"^## ", INTERNALS.read_text(encoding="utf-8"), re.M)) > 10


def test_every_file_the_overview_names_exists():
    named = set(re.findall(r"`((?:orchestrator/)?[\w/]+\.py)`", overview()))
    assert named
    for name in named:
        path = ROOT / name if name.startswith("orchestrator/") else ROOT / "orchestrator" / name
        assert path.exists() or (ROOT / name).exists(), name
