"""`orch serve` throughput: N runs started over HTTP against N `orch run` processes.

Run: ``.venv/bin/python bench/serve_bench.py [--runs N] [--strict]``.
Starts the real service (``--max-runs 4``) on 127.0.0.1, posts N runs of a
3-phase workflow to ``POST /api/runs`` and waits until every one completed
(polling ``GET /api/runs``); the baseline, in the same process, is the same N
runs as N sequential ``orch run`` commands (what a crontab without the
service does). Prints both and their ratio; the target is a ratio of at most 1
(the service starts no process per run and keeps its agent registry loaded).
Also prints the p50 time from the POST to the run's ``workflow_completed``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

TARGET_RATIO = 1.0
WORKFLOW = """name: bench
inputs:
  n: {type: integer, default: 0}
phases:
  - {id: a, agent: echo, with: {text: "a {{ inputs.n }}"}}
  - {id: b, agent: echo, depends_on: [a], with: {text: "{{ phases.a.output }} b"}}
  - {id: c, agent: echo, depends_on: [a], with: {text: "{{ phases.a.output }} c"}}
"""


def via_service(folder: Path, state: Path, runs: int) -> tuple[float, list[float]]:
    env = {**os.environ, "ORCH_STATE_DIR": str(state)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--port",
            "0",
            "--max-runs",
            "4",
            "--workflows",
            str(folder),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert proc.stderr is not None
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    url = None
    while url is None:
        time.sleep(0.05)
        found = [re.search(r"listening on (http://\S+?)/ ", x) for x in lines]
        url = next((m.group(1) for m in found if m), None)
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            start = time.perf_counter()
            posted = {}
            for i in range(runs):
                r = http.post("/api/runs", json={"workflow": "bench", "inputs": {"n": i}})
                posted[r.json()["id"]] = time.time()
            while True:
                done = [
                    x
                    for x in http.get("/api/runs", params={"limit": "1000"}).json()
                    if x["status"] == "completed"
                ]
                if len(done) >= runs:
                    break
                time.sleep(0.02)
            took = time.perf_counter() - start
            latency = [x["ended"] - posted[x["id"]] for x in done if x["id"] in posted]
    finally:
        proc.terminate()
        proc.wait()
    return took, latency


def via_cli(folder: Path, state: Path, runs: int) -> float:
    env = {**os.environ, "ORCH_STATE_DIR": str(state)}
    start = time.perf_counter()
    for i in range(runs):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "run",
                str(folder / "bench.yaml"),
                "--input",
                f"n={i}",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "wf"
        folder.mkdir()
        (folder / "bench.yaml").write_text(WORKFLOW)
        service, latency = via_service(folder, Path(tmp) / "s1", args.runs)
        cli = via_cli(folder, Path(tmp) / "s2", args.runs)
    ratio = service / cli
    print(f"{args.runs} runs through orch serve: {service:.2f}s")
    print(f"{args.runs} runs as orch run processes: {cli:.2f}s (baseline)")
    print(f"ratio: {ratio:.2f} (target <= {TARGET_RATIO})")
    print(f"POST to completed, p50: {statistics.median(latency) * 1000:.0f} ms")
    return 1 if args.strict and ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
