"""The ordered index of moving flows answers like a pass over every row would."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.network.keyindex import KeyIndex


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), negate=st.booleans())
def test_queries_match_a_full_pass(seed: int, negate: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    value = rng.integers(0, 20, n).astype(float)  # few distinct values: many ties
    alive = np.ones(n, dtype=bool)
    index = KeyIndex(negate=negate)
    index.push(np.arange(n), value, value, alive)
    sign = -1.0 if negate else 1.0
    for _ in range(30):
        op = rng.integers(0, 4)
        if op == 3:  # the rows that left are dropped and the others renumbered (compaction)
            keep = np.flatnonzero(alive)
            new_of_old = np.full(value.size, -1, dtype=np.int64)
            new_of_old[keep] = np.arange(keep.size)
            index.renumber(new_of_old)
            value, alive = value[keep], alive[keep]
            n = value.size
            if not n:
                break
        elif op == 0:  # some rows change their value (a refill)
            rows = np.unique(rng.integers(0, n, 15))
            rows = rows[alive[rows]]
            value[rows] = rng.integers(0, 20, rows.size)
            index.push(rows, value[rows], value, alive)
        elif op == 1:  # the rows up to a key leave (drained flows)
            x = float(rng.integers(0, 20)) * sign
            got = index.at_most(x, value, alive, drop=True)
            want = np.flatnonzero(alive & (sign * value <= x))
            np.testing.assert_array_equal(got, want)
            alive[got] = False
        else:
            x = float(rng.integers(0, 20)) * sign
            np.testing.assert_array_equal(index.at_most(x, value, alive), np.flatnonzero(alive & (sign * value <= x)))
        key, row = index.first(value, alive)
        if alive.any():
            assert key == (sign * value[alive]).min() and alive[row] and sign * value[row] == key
        else:
            assert (key, row) == (np.inf, -1)
