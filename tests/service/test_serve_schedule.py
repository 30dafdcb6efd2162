"""The scheduler of `orch serve`: cron in time zones (DST), run_at, overlap, catchup, restarts,
`orch schedule`, and what `orch validate` says about schedules (the same cron library)."""

from __future__ import annotations

import asyncio
import sys
import zoneinfo
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orchestrator.agents.registry import AgentRegistry
from orchestrator.runs.recorded import cancelled_by
from orchestrator.schedule import cron_problem, fire_times, format_local, next_fire
from orchestrator.service.catalog import Catalog
from orchestrator.service.runs import RunManager
from orchestrator.service.scheduler import Scheduler
from orchestrator.state.sqlite import open_store
from tests.service.serving import Serve, orch, wait_for

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = "America/New_York"


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def local(cron: str, tz: str, after: str, n: int) -> list[str]:
    it = fire_times(cron, tz, ts(after))
    return [format_local(next(it), tz) for _ in range(n)]


# -- fire times: daylight saving ---------------------------------------------------------


def test_a_time_skipped_by_spring_forward_does_not_fire_that_day():
    # 2026-03-29: Paris clocks go from 02:00 to 03:00; 02:30 does not exist that day
    assert local("30 2 * * *", "Europe/Paris", "2026-03-27T12:00:00+01:00", 3) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # New York, 2026-03-08: 02:00 -> 03:00
    assert local("15 2 * * *", NEW_YORK, "2026-03-07T00:00:00-05:00", 2) == [
        "2026-03-07T02:15:00-05:00",
        "2026-03-09T02:15:00-04:00",
    ]


def test_a_time_repeated_by_fall_back_fires_once():
    # 2026-10-25: Paris clocks go from 03:00 back to 02:00; 02:30 happens twice
    assert local("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00+02:00", 3) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # starting inside the repeated hour, after the first 02:30: it is not fired again
    assert local("30 2 * * *", "Europe/Paris", "2026-10-25T02:40:00+01:00", 1) == [
        "2026-10-26T02:30:00+01:00"
    ]


def test_wildcard_hours_run_by_elapsed_time_across_both_transitions():
    fall = local("30 * * * *", "Europe/Paris", "2026-10-25T00:00:00+02:00", 4)
    assert fall == [
        "2026-10-25T00:30:00+02:00",
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",  # one real hour later: an hourly job keeps its pace
    ]
    spring = local("*/30 * * * *", "Europe/Paris", "2026-03-29T01:10:00+01:00", 3)
    assert spring == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 30 real minutes later
        "2026-03-29T03:30:00+02:00",
    ]


def test_macros_names_and_utc():
    assert local("@daily", "UTC", "2026-01-01T10:00:00Z", 2) == [
        "2026-01-02T00:00:00+00:00",
        "2026-01-03T00:00:00+00:00",
    ]
    assert local("0 9 * * mon-fri", "UTC", "2026-01-02T10:00:00Z", 2) == [  # a Friday
        "2026-01-05T09:00:00+00:00",
        "2026-01-06T09:00:00+00:00",
    ]
    assert next_fire("0 0 1 jan *", "UTC", ts("2026-06-01T00:00:00Z")) == ts("2027-01-01T00:00:00Z")


def test_the_cron_library_decides_what_is_valid():
    assert cron_problem("*/15 * * * *") is None
    assert cron_problem("@hourly") is None
    assert cron_problem("0 0 31 2 *") is not None  # February 31st never fires
    assert "5 fields" in (cron_problem("0 0 * * * *") or "")


# -- orch validate ------------------------------------------------------------------------


def test_validate_locates_schedule_and_trigger_problems(tmp_path):
    wf = tmp_path / "s.yaml"
    wf.write_text(
        "name: s\n"
        "inputs:\n"
        "  n: {type: integer, required: true}\n"
        "schedule:\n"
        "  - cron: '0 0 31 2 *'\n"
        "    inputs: {n: 1}\n"
        "  - run_at: '2026-12-31 12:00'\n"
        "    inputs: {n: 1}\n"
        "  - cron: '@daily'\n"
        "    inputs: {n: two, m: 1}\n"
        "  - timezone: UTC\n"
        "  - cron: '@hourly'\n"
        "triggers:\n"
        "  - {webhook: true, after: {workflow: x}}\n"
        "phases:\n"
        "  - {id: a, agent: echo, with: {text: '{{ trigger.run_id }}'}}\n"
    )
    out = orch("validate", str(wf), state_dir=tmp_path / "st")
    assert out.returncode == 2, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert f"{wf}:5:11: schedule[0].cron: '0 0 31 2 *' is not a valid cron expression" in text
    assert f"{wf}:7:13: schedule[1].run_at: '2026-12-31 12:00' has no time zone offset" in text
    assert f"{wf}:10:17: schedule[2].inputs: input 'n' must be an integer" in text
    assert f"{wf}:11:5: schedule[3] needs exactly one of cron and run_at" in text
    assert "warning: schedule[4] gives no value for the required input 'n'" in text
    assert "triggers[0] needs exactly one of webhook and after" in text
    assert "unknown name 'trigger'" not in text  # trigger.* is a template name


def test_orch_schedule_lists_next_fire_times_without_starting_anything(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "nightly.yaml").write_text(
        "name: nightly\nschedule:\n  - cron: '0 2 * * *'\n    timezone: Europe/Paris\n"
        "  - run_at: '2001-01-01T00:00:00Z'\n"
        "phases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
    )
    (folder / "broken.yaml").write_text("name: broken\nphases: 3\n")
    out = orch("schedule", "--workflows", str(folder), "-n", "2", state_dir=tmp_path / "st")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "nightly  0 2 * * *  (Europe/Paris, overlap skip)"
    for line in lines[1:3]:
        when = datetime.fromisoformat(line.strip())
        assert when.astimezone(PARIS).hour == 2 and when > datetime.now(timezone.utc)
    assert "run_at 2001-01-01T00:00:00Z" in lines[3] and "never" in lines[4]
    assert "broken" in out.stderr and "invalid" in out.stderr
    assert not (tmp_path / "st").exists()  # nothing recorded, nothing started


# -- the real service under a test clock ------------------------------------------------------

EVERY_MINUTE = """name: tick
schedule:
  - cron: "* * * * *"
phases:
  - id: t
    agent: echo
    with: {text: "fired at {{ trigger.fire_time }}"}
outputs:
  at: "{{ phases.t.output }}"
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_every_minute_fires_once_per_minute_and_not_twice_across_a_restart(tmp_path):
    srv = Serve(tmp_path, {"tick": EVERY_MINUTE}, clock="2026-01-05T10:00:30Z")

    def scheduled() -> list[dict]:
        return [r for r in srv.runs() if r["workflow"] == "tick"]

    def fires_after(iso: str, count: int) -> list[dict]:
        srv.set_time(iso)
        runs = wait_for(lambda: len(scheduled()) >= count and scheduled(), f"{count} runs")
        return runs

    with srv:
        assert "schedule tick: * * * * * (UTC); next 2026-01-05T10:01:00+00:00" in srv.log()
        runs = fires_after("2026-01-05T10:01:00Z", 1)
        # the next minute has not come: moving within it fires nothing more
        srv.set_time("2026-01-05T10:01:59Z")
        fired = srv.http.get("/api/stats").json()["fired"]
        wait_for(
            lambda: srv.http.get("/api/stats").json()["clock"] >= ts("2026-01-05T10:01:59Z"),
            "a scheduler tick at 10:01:59",
        )
        assert srv.http.get("/api/stats").json()["fired"] == fired == 1
        assert len(scheduled()) == 1
        done = srv.run_when(runs[0]["id"], "completed")
        assert done["outputs"] == {"at": "fired at 2026-01-05T10:01:00+00:00"}
    # a restart in the same minute: 10:01 was handled, it is not fired again
    with srv:
        wait_for(
            lambda: srv.http.get("/api/stats").json()["clock"] >= ts("2026-01-05T10:01:59Z"),
            "a scheduler tick after the restart",
        )
        assert len(scheduled()) == 1
        fires_after("2026-01-05T10:02:00Z", 2)
        srv.set_time("2026-01-05T10:02:30Z")
        wait_for(
            lambda: srv.http.get("/api/stats").json()["clock"] >= ts("2026-01-05T10:02:30Z"),
            "a tick at 10:02:30",
        )
        assert len(scheduled()) == 2
        listed = orch("runs", state_dir=srv.state_dir).stdout
        assert listed.count("tick") == 2


# -- overlap, catchup and run_at, in process (a real store, real runs, a test clock) --------

GATED = """name: gated
schedule:
  - cron: "* * * * *"
    overlap: {overlap}
    catchup: {catchup}
phases:
  - id: wait
    agent: shell
    with: {{command: "while [ ! -f go ]; do sleep 0.05; done; echo {{{{ trigger.fire_time }}}}"}}
"""


class FakeClock:
    def __init__(self, iso: str) -> None:
        self.t = ts(iso)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def make(tmp_path: Path, overlap: str = "skip", catchup: str = "false", text: str | None = None):
    folder = tmp_path / "wf"
    folder.mkdir(exist_ok=True)
    (folder / "gated.yaml").write_text(text or GATED.format(overlap=overlap, catchup=catchup))
    store = open_store(tmp_path / "state")
    registry = AgentRegistry.from_entry_points()
    catalog = Catalog(folder, registry)
    catalog.scan()
    clock = FakeClock("2026-01-05T10:00:30Z")
    runs = RunManager(store, registry, 8, clock=clock.now)
    return folder, store, runs, Scheduler(catalog, runs, clock), clock


async def until(check, what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def running_phase(store, run_id: str) -> bool:
    try:
        return any(p.id == "wait" and str(p.state) == "running" for p in store.phases(run_id))
    except Exception:
        return False


@pytest.mark.parametrize("overlap", ["skip", "queue", "allow", "cancel_previous"])
def test_overlap_policies(tmp_path, overlap):
    folder, store, runs, sched, clock = make(tmp_path, overlap=overlap)

    async def main():
        sched.tick(clock.t)  # baseline
        sched.tick(ts("2026-01-05T10:01:00Z"))
        first = runs.running()[0]
        await until(lambda: running_phase(store, first.id), "the first run's phase")
        sched.tick(ts("2026-01-05T10:02:00Z"))
        fires = {f["fire_time"]: f for f in store.schedule_fires("gated")}
        second = fires[ts("2026-01-05T10:02:00Z")]
        if overlap == "skip":
            assert second["outcome"].startswith("skipped: overlap") and second["run_id"] is None
            assert [r.id for r in runs.running()] == [first.id]
        elif overlap == "queue":
            assert second["outcome"] == "started"
            later = runs.active[second["run_id"]]
            await asyncio.sleep(0.2)
            assert later.status == "queued"  # waits for the first to end
        elif overlap == "allow":
            await until(lambda: running_phase(store, second["run_id"]), "both running at once")
            assert running_phase(store, first.id)
        else:
            await first.done.wait()
            assert store.get_run(first.id).status == "cancelled"
            # the service stopped it, as `orch cancel` does: SIGTERM (`orch wait`: 143)
            assert cancelled_by(store, store.get_run(first.id)) == "SIGTERM"
        (folder / "go").write_text("")
        for r in list(runs.active.values()):
            await r.done.wait()
        return first.id, second["run_id"]

    first_id, second_id = asyncio.run(main())
    store.close()
    store = open_store(tmp_path / "state")
    try:
        if overlap == "queue":
            a, b = store.get_run(first_id), store.get_run(second_id)
            assert a.status == b.status == "completed"
            assert a.ended is not None and b.started >= a.ended  # one after the other
        if overlap in ("allow", "cancel_previous"):
            assert store.get_run(second_id).status == "completed"
    finally:
        store.close()


@pytest.mark.parametrize("catchup", ["false", "true"])
def test_catchup_after_downtime(tmp_path, catchup):
    folder, store, runs, sched, clock = make(tmp_path, overlap="allow", catchup=catchup)
    (folder / "go").write_text("")

    async def main():
        sched.tick(clock.t)  # first seen at 10:00:30; then the service is down until 10:05:10
        sched.tick(ts("2026-01-05T10:05:10Z"))
        started = list(runs.running())
        for r in started:
            await r.done.wait()
        return [r.trigger["fire_time"] for r in started]

    fired = asyncio.run(main())
    store.close()
    if catchup == "false":
        assert fired == ["2026-01-05T10:05:00+00:00"]  # at most one missed run: the latest
    else:
        assert fired == [f"2026-01-05T10:0{m}:00+00:00" for m in range(1, 6)]


def test_run_at_fires_once_even_across_a_restart(tmp_path):
    text = (
        "name: gated\nschedule:\n  - run_at: '2026-01-05T10:03:00Z'\n"
        "phases:\n  - {id: wait, agent: echo, with: {text: once}}\n"
    )
    folder, store, runs, sched, clock = make(tmp_path, text=text)

    async def main(s):
        s.tick(ts("2026-01-05T10:02:00Z"))
        s.tick(ts("2026-01-05T10:03:30Z"))
        s.tick(ts("2026-01-05T10:04:00Z"))
        for r in list(runs.active.values()):
            await r.done.wait()

    asyncio.run(main(sched))
    again = Scheduler(sched.catalog, runs, clock)  # a new service on the same store
    asyncio.run(main(again))
    outcomes = [f["outcome"] for f in store.schedule_fires("gated")]
    store.close()
    assert outcomes.count("started") == 1 and sched.fired + again.fired == 1


def test_validate_says_where_a_schedule_takes_effect(tmp_path):
    wf = tmp_path / "w.yaml"
    wf.write_text(EVERY_MINUTE)
    out = orch("validate", str(wf), state_dir=tmp_path / "st")
    assert out.returncode == 0, out.stdout
    assert out.stdout.splitlines()[1] == (
        "  note: schedule: start runs only under `orch serve`"
        " (`orch schedule` lists the next fire times)"
    )
