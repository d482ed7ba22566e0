"""The interface every compute model answers: seconds for one call of a catalogue kernel.

:class:`ComputeModel` is what the replay asks (``time``/``estimate`` of a kernel, pass, dtype and
shape); :class:`ComputeEstimate` is one answer with its FLOP and byte counts and where the number
came from.  The models live in :mod:`netsim.calibration.roofline` (peak rates),
:mod:`netsim.calibration.compute` (measured tables), :mod:`netsim.calibration.attention`
(attention from FLOPs at a published efficiency) and :mod:`netsim.calibration.profiles`
(an accelerator's bundle of them); :mod:`netsim.calibration.models` picks the one a run uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ComputeEstimate", "ComputeModel"]


@dataclass(frozen=True)
class ComputeEstimate:
    """One answer of a compute model.

    Attributes: ``kernel``, ``pass_``, ``dtype`` (the dtype it ran in), ``time_s`` (seconds per
    call), ``flops`` and ``bytes`` (catalogue counts of one call), ``source`` (``table`` or the
    name of the roofline that answered).
    """

    kernel: str
    pass_: str
    dtype: str
    time_s: float
    flops: float
    bytes: float
    source: str


@runtime_checkable
class ComputeModel(Protocol):
    """What the replay needs: seconds for one call of a catalogue kernel."""

    name: str

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        """Seconds of one call of ``kernel`` / ``pass_`` at ``shape`` in ``dtype``."""
        ...

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        """Like :meth:`time` with the FLOP/byte counts and where the number came from."""
        ...
