"""
How often CPython's cyclic garbage collector runs in msync's processes.

Every pushed op and every gateway call allocates a few short-lived
containers (an op's tuple, its in-flight record, a call's Deferreds).
With CPython's default, a pass over the youngest objects every 700 such
allocations, the collector took about a tenth of the daemon's CPU while
it drained a backlog.  A pass every 7,000 allocations does the same work
in fewer, larger steps: measured side by side, a backlog drained 8 %
faster on 9 % less CPU and a global fan-out 7 % faster, with online
latency unchanged within the noise.  Nearly everything is freed by
reference counting as it goes; the collector is only there for cycles.
"""

from __future__ import annotations

import gc

#: Container allocations (less deallocations) between two collections
#: of the youngest generation; CPython's default is 700.
YOUNG = 7000


def pace() -> None:
    """Collect the youngest generation every L{YOUNG} allocations; the
    older generations keep CPython's own ratios."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
