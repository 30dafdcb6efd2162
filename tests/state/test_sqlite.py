"""The SQLite store on its own: write-ahead rows, group commit, ownership, corruption, cache."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from orchestrator.errors import RunLocked, RunNotFound, StateCorrupted, StateError, UsageError
from orchestrator.events import Event
from orchestrator.state.base import Owner, PhaseState, current_owner
from orchestrator.state.sqlite import OUTPUT_CAP, SCHEMA_VERSION, open_store

# The store's own tests write small hand-made events (only the fields each test needs).
pytestmark = pytest.mark.handmade_events


def _ev(kind, run="r1", phase=None, attempt=None, ts=1000.0, **data):
    return Event(kind, run, ts, phase, attempt, data)


def _started(run="r1", phases=("a", "b", "c"), ts=1000.0, **resumed):
    return _ev(
        "workflow_started",
        run,
        ts=ts,
        workflow="wf",
        path="wf.yaml",
        source_hash="h1",
        phases=list(phases),
        fingerprints={p: f"fp-{p}" for p in phases},
        inputs={"x": 1},
        pid=os.getpid(),
        **resumed,
    )


def _completed_a(output):
    return _ev(
        "phase_completed", phase="a", attempt=1, status="completed", output=output, attempts=1
    )


async def _record_all(store, events):
    for e in events:
        await store.record(e)


def test_a_run_is_recorded_with_derived_rows(tmp_path):
    store = open_store(tmp_path)
    events = [
        _started(),
        _ev("phase_started", phase="a", attempt=1, ts=1001.0, agent="echo"),
        _ev(
            "phase_completed",
            phase="a",
            attempt=1,
            ts=1002.5,
            status="completed",
            output={"v": [1, 2]},
            duration=1.5,
            attempts=1,
            cached=False,
            fallback_used=False,
        ),
        _ev("phase_started", phase="b", attempt=1, ts=1003.0),
        _ev("phase_retry", phase="b", attempt=1, ts=1003.5, error="boom", delay=0.1),
        _ev("phase_started", phase="b", attempt=2, ts=1004.0),
        _ev(
            "phase_failed",
            phase="b",
            attempt=2,
            ts=1005.0,
            status="failed",
            error="boom",
            attempts=2,
        ),
        _ev("phase_skipped", phase="c", ts=1005.0, status="skipped", reason="upstream failed"),
        _ev(
            "workflow_failed",
            ts=1006.0,
            status="failed",
            error="phase 'b' failed",
            outputs={},
            counts={"completed": 1, "failed": 1, "skipped": 1},
        ),
    ]
    asyncio.run(_record_all(store, events))
    run = store.get_run("r1")
    assert (run.status, run.workflow, run.source_hash) == ("failed", "wf", "h1")
    assert run.duration == pytest.approx(6.0)
    assert run.fingerprints == {"a": "fp-a", "b": "fp-b", "c": "fp-c"}
    assert run.counts == {"completed": 1, "failed": 1, "skipped": 1}
    phases = {p.id: p for p in store.phases("r1")}
    assert [p.id for p in store.phases("r1")] == ["a", "b", "c"]
    assert phases["a"].state is PhaseState.COMPLETED and phases["a"].output == {"v": [1, 2]}
    assert phases["a"].duration == pytest.approx(1.5)
    assert (phases["b"].state, phases["b"].attempts, phases["b"].error) == ("failed", 2, "boom")
    assert phases["b"].duration == pytest.approx(2.0)  # from its first attempt
    assert phases["c"].state is PhaseState.SKIPPED
    assert [e.event for _, e in store.events("r1")] == [e.event for e in events]
    assert [e.attempt for _, e in store.events("r1", phase="b")] == [1, 1, 2, 2]
    store.close()
    # A second process sees the same thing (it is on disk, not in memory).
    with open_store(tmp_path) as again:
        assert again.get_run("r1").status == "failed"


def test_a_phase_has_a_row_once_it_ends_and_reads_running_or_pending_before(tmp_path):
    # a run that just started writes no row per planned phase, and a running phase has
    # none either: its phase_started says it runs (rows.RUNNING); a phase gets its row,
    # in its place in the plan, when it ends; the others read as pending, in plan order
    with open_store(tmp_path) as store:
        events = [
            _started(phases=("z", "a", "m", "b")),
            _ev("phase_started", phase="m", attempt=1, ts=1001.0),
            _ev("phase_skipped", phase="b", ts=1001.5, status="skipped", reason="when is false"),
            _ev("phase_started", phase="cleanup", attempt=1, ts=1002.0),  # not planned
        ]
        asyncio.run(_record_all(store, events))
        listed = [(p.id, str(p.state)) for p in store.phases("r1")]
        assert listed == [
            ("z", "pending"),
            ("a", "pending"),
            ("m", "running"),
            ("b", "skipped"),
            ("cleanup", "running"),
        ]
        store.close()
        conn = sqlite3.connect(tmp_path / "state.db")
        rows = conn.execute("SELECT id, idx FROM phases ORDER BY idx").fetchall()
        conn.close()
        assert rows == [("b", 3)]
    # another process (a store that did not see workflow_started) places rows the same way
    with open_store(tmp_path) as other:
        asyncio.run(_record_all(other, [_ev("phase_started", phase="a", attempt=1)]))
        assert [p.id for p in other.phases("r1")] == ["z", "a", "m", "b", "cleanup"]


def test_a_resume_with_the_phases_in_another_order_lists_them_in_the_new_order(tmp_path):
    with open_store(tmp_path) as store:
        events = [
            _started(phases=("a", "b", "c")),
            _completed_a(1),
            _ev("phase_started", phase="b", attempt=1),
            _ev("workflow_failed", status="failed"),
            _started(phases=("c", "b", "a"), resumed_from="r1"),  # the resume's plan
        ]
        asyncio.run(_record_all(store, events))
        listed = [(p.id, str(p.state)) for p in store.phases("r1")]
        assert listed == [("c", "pending"), ("b", "cancelled"), ("a", "completed")]


def test_a_run_whose_plan_cannot_be_read_lists_the_phases_it_has_rows_for(tmp_path):
    with open_store(tmp_path) as store:
        events = [_started(), _ev("phase_started", phase="b", attempt=1)]
        asyncio.run(_record_all(store, events))
        store.close()
        conn = sqlite3.connect(tmp_path / "state.db")
        conn.execute("UPDATE runs SET info='{\"phases\": 7'")  # not JSON any more
        conn.commit()
        conn.close()
        assert [p.id for p in store.phases("r1")] == ["b"]


def test_a_new_runs_start_with_the_id_of_a_recorded_run_is_refused_and_changes_nothing(
    tmp_path,
):
    with open_store(tmp_path) as store:
        asyncio.run(_record_all(store, [_started(), _completed_a(1)]))
        again = _started(phases=("x",), ts=2000.0)  # not a resume: no resumed_from
        with pytest.raises(StateError, match="run 'r1' already exists"):
            asyncio.run(store.record(again))
        assert store.get_run("r1").started == 1000.0
        assert [p.id for p in store.phases("r1")] == ["a", "b", "c"]
        assert [e.event for _, e in store.events("r1")] == ["workflow_started", "phase_completed"]


def test_phase_started_is_durable_before_record_returns(tmp_path):
    store = open_store(tmp_path)

    async def go():
        await store.record(_started())
        await store.record(_ev("phase_started", phase="a", attempt=1))
        # read through a store of its own, as another process would (`orch status`)
        with open_store(tmp_path) as other:
            return {p.id: str(p.state) for p in other.phases("r1")}

    assert asyncio.run(go()) == {"a": "running", "b": "pending", "c": "pending"}
    store.close()


def test_concurrent_events_are_group_committed(tmp_path):
    with open_store(tmp_path) as store:
        n = 300

        async def go():
            await store.record(_started(phases=[f"p{i}" for i in range(n)]))
            await asyncio.gather(
                *(store.record(_ev("phase_started", phase=f"p{i}", attempt=1)) for i in range(n))
            )

        asyncio.run(go())
        store.close()
        # every event is there, in far fewer transactions than events (WAL frames are per commit)
        assert {p.state for p in store.phases("r1")} == {PhaseState.RUNNING}
        assert len(store.events("r1")) == n + 1


def test_runs_in_several_threads_with_their_own_loops_can_share_one_store(tmp_path):
    # One commit may hold events of several loops: each future is settled in its own
    # loop's thread. Before, all were handed to the first one's loop: the others were
    # never woken and their runs hung.
    import threading

    with open_store(tmp_path) as store:
        results: dict[int, int] = {}

        def worker(k: int) -> None:
            async def go() -> None:
                run = f"r{k}"
                phases = [f"p{i}" for i in range(150)]
                await store.record(_started(run, phases=phases))
                await asyncio.gather(
                    *(store.record(_ev("phase_started", run, phase=p, attempt=1)) for p in phases)
                )
                results[k] = len(store.events(run))

            asyncio.run(go())

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)  # a guard against a hang, not a speed bound
        assert not [t.name for t in threads if t.is_alive()]
        assert results == dict.fromkeys(range(4), 151)


def test_a_batch_of_events_keeps_its_order_and_sequence_numbers(tmp_path):
    # One transaction of 2 x 99 + 3 events (written by multi-row INSERTs of up to 64 rows):
    # each event keeps its place, each completed phase points at its own phase_completed,
    # a big output in the middle spills, and a phase outside the plan gets its row.
    planned = [f"p{i}" for i in range(99)]
    big = "x" * (OUTPUT_CAP + 10)
    events = [_started(phases=planned)]
    for i, pid in enumerate(planned):
        events.append(_ev("phase_started", phase=pid, attempt=1, ts=1000.0 + i, agent="echo"))
        if i == 40:  # a phase outside the plan (a handler) among them: its row is made
            events.append(_ev("phase_started", phase="handler", attempt=1, ts=1500.0))
    for i, pid in enumerate(planned):
        output = big if i == 50 else {"n": i}
        events.append(
            _ev("phase_completed", phase=pid, attempt=1, ts=2000.0 + i, output=output, attempts=1)
        )
    events.append(_ev("phase_completed", phase="handler", attempt=1, ts=3000.0, output="h"))
    with open_store(tmp_path) as store:
        store.append(events)
        store.close()
        stored = store.events("r1")
        assert [(e.event, e.phase, e.ts) for _, e in stored] == [
            (e.event, e.phase, e.ts) for e in events
        ]
        seqs = [seq for seq, _ in stored]
        assert seqs == list(range(seqs[0], seqs[0] + len(events)))
        completed_at = {e.phase: seq for seq, e in stored if e.event == "phase_completed"}
        phases = store.phases("r1")
        assert [p.id for p in phases] == [*planned, "handler"]
        assert {p.id: p.completed_seq for p in phases} == completed_at
        assert {p.id: p.output for p in phases} == {
            **{pid: ({"n": i} if i != 50 else big) for i, pid in enumerate(planned)},
            "handler": "h",
        }
        assert {p.state for p in phases} == {PhaseState.COMPLETED}
        assert phases[7].started == 1007.0  # from its phase_started, kept by the completion
        assert phases[-1].started == 1500.0


def test_big_outputs_spill_to_files(tmp_path):
    with open_store(tmp_path) as store:
        big = "x" * (OUTPUT_CAP + 10)
        asyncio.run(
            _record_all(
                store,
                [
                    _started(),
                    _completed_a(big),
                ],
            )
        )
        store.close()
        assert store.phases("r1")[0].output == big
        files = list((tmp_path / "outputs").rglob("*.json"))
        assert len(files) == 1 and json.loads(files[0].read_text()) == big
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        assert conn.execute("SELECT output FROM phases WHERE id='a'").fetchone()[0] is None
        assert big not in conn.execute("SELECT data FROM events").fetchall()[-1][0]


def test_unknown_run_and_ambiguous_prefix(tmp_path):
    with open_store(tmp_path) as store:
        asyncio.run(_record_all(store, [_started("abc1"), _started("abc2")]))
        store.close()
        with pytest.raises(RunNotFound, match="no run 'zzz'"):
            store.get_run("zzz")
        with pytest.raises(UsageError, match="matches several runs"):
            store.get_run("abc")
        assert store.get_run("abc2").id == "abc2"


def test_a_corrupt_row_names_run_phase_and_row_and_other_runs_stay_readable(tmp_path):
    store = open_store(tmp_path)
    done = {"status": "completed", "output": 1, "attempts": 1}
    asyncio.run(
        _record_all(
            store,
            [
                _started("good"),
                _ev("phase_completed", "good", phase="a", attempt=1, **done),
                _started("bad"),
                _ev("phase_completed", "bad", phase="b", attempt=1, **done),
            ],
        )
    )
    store.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("UPDATE phases SET output='{not json' WHERE run_id='bad' AND id='b'")
    conn.execute("UPDATE events SET data='[1,' WHERE run_id='bad' AND phase='b'")
    conn.commit()
    conn.close()
    with open_store(tmp_path) as store:
        with pytest.raises(StateCorrupted, match=r"run 'bad' phase 'b'.*table 'phases'"):
            store.phases("bad")
        with pytest.raises(StateCorrupted, match=r"run 'bad' phase 'b': row \d+ of table 'events'"):
            store.events("bad")
        assert store.phases("good")[0].output == 1
        assert {r.id for r in store.list_runs()} == {"good", "bad"}


def test_a_newer_schema_is_refused(tmp_path):
    open_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(Exception, match="newer than this orch understands"):
        open_store(tmp_path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateCorrupted, match="state.db"):
        open_store(tmp_path)


def test_a_running_run_of_a_dead_process_is_interrupted_and_can_be_claimed(tmp_path):
    code = (
        "import asyncio, os, sys\n"
        "from orchestrator.events import Event\n"
        "from orchestrator.state.sqlite import open_store\n"
        "s = open_store(sys.argv[1])\n"
        "asyncio.run(s.record(Event('workflow_started', 'dead', 1.0, data={'workflow': 'w',"
        " 'phases': ['a']})))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    with open_store(tmp_path) as store:
        run = store.get_run("dead")
        assert run.status == "interrupted" and run.owner is not None and not run.owner.alive()
        claimed = store.claim("dead")
        assert claimed.status == "running" and claimed.owner == current_owner()


def test_a_live_owner_refuses_a_claim_naming_it(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys, time\n"
            "from orchestrator.events import Event\n"
            "from orchestrator.state.sqlite import open_store\n"
            "s = open_store(sys.argv[1])\n"
            "asyncio.run(s.record(Event('workflow_started', 'live', 1.0, data={'phases': []})))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with open_store(tmp_path) as store:
            assert store.get_run("live").status == "running"
            with pytest.raises(RunLocked, match=f"process {proc.pid}"):
                store.claim("live")
            proc.kill()
            proc.wait()
            assert store.get_run("live").status == "interrupted"
    finally:
        proc.kill()  # nothing left to do when it is already dead
        proc.wait()
        proc.stdout.close()


def test_owner_with_reused_pid_is_not_alive():
    me = current_owner()
    assert me.alive()
    assert not Owner(me.pid, "1").alive()  # same pid, different start time: another process
    assert not Owner(0).alive()


def test_cache_put_get_ttl_and_clear(tmp_path):
    store = open_store(tmp_path)

    async def go():
        await store.cache_put("k1", {"a": 1}, {"tokens": 3}, now=100.0, ttl=10.0)
        await store.cache_put("k2", [1], {}, now=100.0, ttl=None)

    asyncio.run(go())
    store.close()  # puts are queued, not awaited: close waits for them
    hit = store.cache_get("k1", now=105.0)
    assert hit is not None and hit.output == {"a": 1} and hit.metadata == {"tokens": 3}
    assert store.cache_get("k1", now=111.0) is None
    assert store.cache_get("k2", now=1e12).output == [1]
    assert store.cache_clear() == 2
    assert store.cache_get("k2") is None
    store.close()


def test_claim_resets_phases_to_run_again(tmp_path):
    with open_store(tmp_path) as store:
        asyncio.run(
            _record_all(
                store,
                [
                    _started(),
                    _completed_a(1),
                    _ev("workflow_failed", status="failed"),
                ],
            )
        )
        store.close()
        store.claim("r1", rerun=["a"])
        assert store.phases("r1")[0].state is PhaseState.PENDING
        assert store.phases("r1")[0].completed_seq is None


def test_processes_opening_a_new_state_directory_at_once_all_succeed(tmp_path):
    # Switching a new database to WAL from two processes at once used to fail one of
    # them at once with "database is locked" (SQLite skips the busy timeout there).
    code = (
        "import sys, time\n"
        "from orchestrator.state.sqlite import open_store\n"
        "while time.time() < float(sys.argv[2]): pass\n"  # start together
        "open_store(sys.argv[1]).close()\n"
    )
    failures = []
    for trial in range(4):
        folder = tmp_path / f"s{trial}"
        start = f"{__import__('time').time() + 0.5:.3f}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(folder), start],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        for p in procs:
            _, err = p.communicate(timeout=60)
            if p.returncode != 0:
                failures.append(err.strip().splitlines()[-1])
    assert failures == []


def test_a_wal_file_that_vanishes_meanwhile_does_not_make_the_folder_read_only(tmp_path):
    # Another process closing its last connection deletes the -wal and -shm files; a
    # store opening at that moment saw the file, then could not access it, and said
    # "the state folder ... is read-only" (seen with two orch runs sharing a new folder).
    import threading

    from orchestrator.state.sqlite import _writable

    db = tmp_path / "orch.db"
    db.write_bytes(b"")
    wal = tmp_path / "orch.db-wal"
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            wal.write_bytes(b"")
            wal.unlink()

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        seen = [_writable(tmp_path, db) for _ in range(10_000)]
    finally:
        stop.set()
        thread.join()
    assert all(seen), f"read-only {seen.count(False)} times in {len(seen)}"
