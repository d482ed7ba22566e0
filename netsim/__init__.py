"""moe-netsim: a flow-level discrete-event simulator of GPU/NPU cluster networks for training.

The package is layered (dependencies point downward)::

    cli -> sweep / report -> replay -> workload / moe / collectives -> network -> topology -> spec / units

See DESIGN.md in the repository for the architecture and README.md for usage.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("moe-netsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
