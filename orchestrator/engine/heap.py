"""What existed before a run starts stays out of Python's cyclic GC while runs go on.

A run of thousands of phases keeps thousands of tasks alive at once (each waiting
for its event to be stored), so the heap grows by a quarter again and again and
every growth triggers a full collection, which walks everything: the modules, the
plan, the caller's data, all of which outlive the run. ``gc.freeze`` moves what
exists now to the permanent generation, which no collection walks (about 5 us a
phase of 10,000 noop phases with the state store; bench/engine_bench.py).

The first run of the process to start freezes; the last to end unfreezes (runs
overlap: sub-runs, ``orch serve``). A process that froze objects itself
(``gc.get_freeze_count()`` when the first run starts), or turned the GC off, is left
alone. Python 3.12 starts with a few hundred objects of its own in the permanent
generation (``gc.get_freeze_count()`` is not 0 at start-up): the count this module saw
at import, or after its own unfreeze, is what "nobody froze anything" looks like.
Cyclic garbage that existed when the first run started is collected once the last
one ends.

While runs go on, a collection of the young generation also waits for 5,000 new
objects instead of Python's 700 (``gc.set_threshold``): a run allocates a handful of
objects per phase, event and callback, and most of them die young; at 700 the
collector runs every few phases and moves what is alive then (the tasks waiting
for the store) up a generation, to be walked again later. About 6 us a phase of
10,000 noop phases with the state store, 1 MB of cyclic garbage at most waits
longer. Thresholds that are not the ones Python started with (the process set its
own) are left alone, like a freeze of its own.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["frozen_heap"]

_lock = threading.Lock()  # runs may go on in several threads (each its own event loop)
_runs = 0  # runs going on in this process
_mine = False  # whether the freeze in force is this module's
_unfrozen = gc.get_freeze_count()  # the count when nobody froze anything (not 0 on 3.12)
_YOUNG = 5_000  # new objects between two collections of the young generation, in runs
_started = gc.get_threshold()  # the thresholds Python started with
_raised: tuple[int, ...] | None = None  # the thresholds this module set (None: none)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist now out of cyclic GC until the last run ends."""
    global _runs, _mine, _unfrozen, _raised
    with _lock:
        if _runs == 0:
            _mine = gc.isenabled() and gc.get_freeze_count() == _unfrozen
            if _mine:
                gc.freeze()
                if gc.get_threshold() == _started and _started[0] < _YOUNG:
                    _raised = (_YOUNG, *_started[1:])
                    gc.set_threshold(*_raised)
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0 and _mine:
                _mine = False
                if _raised is not None and gc.get_threshold() == _raised:
                    gc.set_threshold(*_started)
                _raised = None
                gc.unfreeze()
                _unfrozen = gc.get_freeze_count()
