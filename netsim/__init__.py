"""moe-netsim: a flow-level discrete-event simulator of GPU/NPU cluster networks for training.

The package is layered (dependencies point downward)::

    cli -> studies / sweep -> report -> run -> replay -> workload / moe / collectives -> network
        -> topology -> config / units

See docs/architecture.md for the architecture and README.md for usage.  ``__version__`` is read
from the installed distribution on first use (``importlib.metadata`` costs a noticeable part of
``netsim --help``'s start-up otherwise).
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("moe-netsim")
        except PackageNotFoundError:  # running from a source tree that is not installed
            found = "0.0.0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'netsim' has no attribute {name!r}")
