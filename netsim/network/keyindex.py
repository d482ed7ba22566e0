"""An ordered index of the moving flows by one key, answering "every row with key <= x" in time
proportional to the answer.

The engine asks two such questions at every event: which flows have drained by now (key: drain
time) and which flows run at or above a rate (key: minus the rate).  A pass over every moving
flow answers them too, but costs O(flows) per event; with O(nodes) events and O(nodes^2) flows
in an all-to-all that made the exact model O(flows^1.5).

The index is a few *runs*: sorted arrays of (key, row).  A refill pushes the rows it changed as
a new run and merges it with the newest runs while they are not larger than twice it (a binary
counter: an entry is merged O(log n) times).  Entries are never updated in place; an entry is
*stale* once its row's current key differs from it (exact comparison: the same float was
stored) or its row has left.  Queries skip stale entries, and a run's leading stale entries are
dropped for good (``start``), so rows that leave in key order, as drained flows do, cost
nothing later; merges drop the other stale entries.
"""

from __future__ import annotations

import numpy as np


class KeyIndex:
    """Rows ordered by a float key, with lazy deletion (see the module doc).

    Args:
        negate: the key of a row is minus its value in the ``current`` arrays the methods get
            (for "every row with value >= x": ask :meth:`at_most` for ``-x``).
    """

    def __init__(self, negate: bool = False) -> None:
        self._sign = -1.0 if negate else 1.0
        self._keys: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._start: list[int] = []

    def clear(self) -> None:
        self._keys, self._rows, self._start = [], [], []

    def push(self, rows: np.ndarray, keys: np.ndarray, current: np.ndarray, alive: np.ndarray) -> None:
        """Enter ``rows`` with their (new) ``keys``; ``current``/``alive``: key and liveness of
        every row now (to drop stale entries while merging)."""
        if rows.size == 0:
            return
        keys = self._sign * keys
        order = np.argsort(keys, kind="stable")
        k, r = keys[order], rows[order]
        while self._keys and self._keys[-1].size - self._start[-1] <= 2 * k.size:
            s0 = self._start.pop()
            k0, r0 = self._keys.pop()[s0:], self._rows.pop()[s0:]
            live = alive[r0] & (self._sign * current[r0] == k0)
            k = np.concatenate([k0[live], k])
            r = np.concatenate([r0[live], r])
            order = np.argsort(k, kind="stable")
            k, r = k[order], r[order]
        self._keys.append(k)
        self._rows.append(r)
        self._start.append(0)

    def renumber(self, new_of_old: np.ndarray) -> None:
        """Rows were renumbered (``new_of_old[row]``, -1 for a row that is gone): keep every run's
        order, drop the entries of rows that are gone.  Linear: no sort."""
        for i, (keys, rows) in enumerate(zip(self._keys, self._rows, strict=True)):
            s = self._start[i]
            new = new_of_old[rows[s:]]
            keep = new >= 0
            self._keys[i], self._rows[i], self._start[i] = keys[s:][keep], new[keep], 0

    def at_most(self, x: float, current: np.ndarray, alive: np.ndarray, drop: bool = False) -> np.ndarray:
        """The live rows whose key is <= ``x``, ascending, each once.  ``drop``: the caller
        retires them all now (they leave), so their entries are dropped too."""
        found = []
        for i, keys in enumerate(self._keys):
            s = self._start[i]
            j = int(np.searchsorted(keys, x, side="right"))
            if j <= s:
                continue
            rows = self._rows[i][s:j]
            live = alive[rows] & (self._sign * current[rows] == keys[s:j])
            if drop or not live.any():
                self._start[i] = j
            else:
                self._start[i] = s + int(np.argmax(live))
            found.append(rows[live])
        if not found:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(found))

    def first(self, current: np.ndarray, alive: np.ndarray) -> tuple[float, int]:
        """The smallest live key and its row (``inf``, -1 if none); drops the leading stale
        entries it meets."""
        best, best_row = np.inf, -1
        for i, keys in enumerate(self._keys):
            s = self._start[i]
            rows = self._rows[i]
            block = 64
            while s < keys.size:
                e = min(s + block, keys.size)
                live = alive[rows[s:e]] & (self._sign * current[rows[s:e]] == keys[s:e])
                if live.any():
                    s += int(np.argmax(live))
                    if keys[s] < best:
                        best, best_row = float(keys[s]), int(rows[s])
                    break
                s = e
                block *= 2
            self._start[i] = s
        return best, best_row
