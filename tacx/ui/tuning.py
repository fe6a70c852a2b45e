"""How the dashboard's process shares its CPU while daughters flood their logs: the GIL's
slice and the garbage collector's pace. Both are process-wide, so the app sets them when
it mounts and puts them back when it unmounts (tests run many apps in one process)."""

from __future__ import annotations

import gc
import sys

# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
# The loop shares the process with threads that parse daughters' output, tail the log and
# read snapshots; each time the loop comes back from select() it waits out one slice.
GIL_SLICE_SECONDS = 0.001
# Allocations between two young collections (Python's default: 700). Every 10th young
# collection is a middle one and every 10th of those may be a full one, which stops the
# whole process for tens of milliseconds with ~100,000 objects alive after startup.
YOUNG_COLLECTION_ALLOCATIONS = 10_000


class ProcessTuning:
    """``apply()`` at mount, ``settle()`` once the first screen is shown, ``restore()`` at
    unmount."""

    def __init__(self) -> None:
        self._slice: float | None = None
        self._thresholds: tuple[int, int, int] | None = None
        self._frozen = False

    def apply(self) -> None:
        """Hand the GIL over after GIL_SLICE_SECONDS rather than 5 ms, so a key press waits
        less for the threads that parse and read (bench/ui.py, 8 daughters x 5 MB/s on a
        busy 2-core machine, two runs each: loaded select 2246/1464 -> 679/446 ms, filter
        2470/2020 -> 543/433 ms at the median)."""
        if self._slice is None:
            self._slice = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SLICE_SECONDS)

    def settle(self) -> None:
        """Everything built to start the app lives as long as the app: leave it out of the
        collector's full passes, which stop the whole process and otherwise walk it again
        about once a second (bench/ui.py: loaded key press to screen 146 -> 101 ms median);
        then collect the young generation less often (see YOUNG_COLLECTION_ALLOCATIONS)."""
        gc.collect()
        gc.freeze()
        self._frozen = True
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
        _, middle, old = self._thresholds
        gc.set_threshold(max(YOUNG_COLLECTION_ALLOCATIONS, self._thresholds[0]), middle, old)

    def restore(self) -> None:
        if self._slice is not None:
            sys.setswitchinterval(self._slice)
            self._slice = None
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        if self._frozen:  # what the app froze goes back to the collector (another app may follow)
            gc.unfreeze()
            self._frozen = False
