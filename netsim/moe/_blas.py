"""The BLAS thread count around the routers' small GEMMs.

A router's gating product is small (a rank's tokens x a 64-wide synthetic feature space x the
experts: a fraction of a millisecond of one core), and it runs thousands of times while a plan
is built.  OpenBLAS splits such products over every core; on a machine whose other cores are
busy its threads mostly wait for each other (measured on the project's shared 2-core machine:
the 8-node LocMoE run took 12.1-12.9 s wall and 11.8-12.4 s of CPU with two threads, 8.8-9.0 s
and 8.2-8.5 s with one, every output file identical).  :func:`one_blas_thread` runs a block
with one BLAS thread and restores the previous count after it.

The count is set through the OpenBLAS that numpy loaded (found among the process's mapped
libraries, as threadpoolctl does, under the symbol names of the plain and the ``scipy-openblas``
64-bit builds).  Where there is none to find (another BLAS, another platform) the block runs
unchanged.

One thread also keeps the routing the same on every machine: OpenBLAS may sum a product in
another order with another thread count (the 0.3.31 that numpy 2.4.6 ships gives a 3,000 x 16
by 16 x 64 float32 product up to 1.4e-6 apart with one and with two threads), and a router's
top-k can turn on the last bit.  Every router's gating product runs inside
:func:`one_blas_thread`, so its result does not depend on the cores of the machine.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

__all__ = ["one_blas_thread"]

#: (prefix, suffix) of the OpenBLAS symbol names: plain builds and numpy's scipy-openblas64
_SYMBOLS = (("", ""), ("scipy_", "64_"), ("", "64_"), ("scipy_", ""))


@cache
def _controls() -> tuple[tuple[Callable[[], int], Callable[[int], None]], ...]:
    """``(get, set)`` of the thread count of every OpenBLAS mapped into the process when first
    asked (numpy's, and scipy's own copy if scipy was imported by then); none when none is found."""
    import numpy  # noqa: F401  (loads the BLAS whose thread count is wanted)

    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", fh.read())))
    except OSError:
        return ()
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in _SYMBOLS:
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                found.append((get, put))
                break
    return tuple((lambda g=g: int(g()), lambda n, p=p: p(n)) for g, p in found)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one BLAS thread (see the module docstring), then restore the counts."""
    ctl = _controls()
    before = [get() for get, _ in ctl]
    for (_, put), n in zip(ctl, before, strict=True):
        if n != 1:
            put(1)
    try:
        yield
    finally:
        for (_, put), n in zip(ctl, before, strict=True):
            if n != 1:
                put(n)
