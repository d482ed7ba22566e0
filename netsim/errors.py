"""Errors that the command line turns into a one-line message and exit code 2.

Every error a user can cause (a malformed file, a bad value, an unknown name) is raised as a
:class:`NetsimError` subclass.  The message is built from *where* (file and field) and *what*
(the problem and what is allowed), so the CLI can print exactly one readable line::

    error: topologies/x.yaml: backend.link_bandwidth: must be > 0 (got '-5Gbps')

Anything that is not a ``NetsimError`` is a bug in netsim and keeps its traceback.
"""

from __future__ import annotations


class NetsimError(Exception):
    """Base class of user-facing errors.

    Args:
        message: what is wrong and, where it helps, what is allowed.
        source: the file (or other input) the problem is in, if any.
        field: the dotted field path inside that input, if any.
    """

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.source = source
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.source, self.field) if p]
        text = " ".join(self.message.split())  # never more than one line
        return ": ".join([*parts, text])

    def with_source(self, source: str) -> NetsimError:
        """Return the same error attributed to ``source`` (keeps an existing source)."""
        if self.source is None:
            self.source = source
            self.args = (self.one_line(),)
        return self


class SpecError(NetsimError):
    """A specification (YAML, CLI option, --set override) is malformed or out of range."""


class UnitError(SpecError):
    """A quantity with units ("400Gbps", "1.5us") could not be parsed."""


class TopologyError(NetsimError):
    """A topology is unusable: unknown preset, disconnected, unknown device, bad link."""


class RoutingError(NetsimError):
    """No route exists between two devices, or a pinned path is not a path of the topology."""


class TraceError(NetsimError):
    """A trace or measured log (nccl-tests, Kineto, Chakra, routing trace) is malformed."""


class WorkloadError(NetsimError):
    """A workload is inconsistent (parallel sizes do not divide the ranks, bad schedule...)."""


class OutputError(NetsimError):
    """An output path is refused (exists, not netsim's, a protected folder) or cannot be written."""


class LimitError(SpecError):
    """An input is larger than netsim accepts (file size, nesting, counts) or than this machine can hold."""
