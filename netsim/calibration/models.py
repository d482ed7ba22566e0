"""Which compute model a run uses: the accelerator's profile, a given kernel table, or the roofline.

:func:`make_compute_model` is the one entry point (``netsim run``, ``netsim validate-kernels``);
it sits above the models it chooses from (:mod:`netsim.calibration.profiles`,
:mod:`netsim.calibration.compute`, :mod:`netsim.calibration.roofline`), which do not import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netsim.calibration.compute import TableComputeModel
from netsim.calibration.estimate import ComputeModel
from netsim.calibration.kernels import KernelTable
from netsim.calibration.profiles import profile_compute_model
from netsim.calibration.roofline import RooflineComputeModel
from netsim.errors import SpecError

__all__ = ["make_compute_model"]


def make_compute_model(
    accelerator: Mapping[str, Any] | None = None,
    table: KernelTable | str | Path | None = None,
    *,
    efficiency: float = 1.0,
    memory_efficiency: float = 1.0,
    default_dtype: str | None = None,
) -> ComputeModel:
    """The compute model for a run.

    An ``accelerator`` (a topology's ``graph.graph["accelerator"]``) with a ``compute`` section:
    the model of its profile (:func:`netsim.calibration.profiles.profile_compute_model`; a given
    ``table`` replaces the profile's table).  Otherwise, with a ``table``:
    :class:`TableComputeModel` (fallback: the table's empirical roofline); without: the
    :class:`RooflineComputeModel` of ``accelerator`` with the given efficiencies.
    """
    compute = (accelerator or {}).get("compute")
    if accelerator is not None and isinstance(compute, Mapping):
        model: ComputeModel = profile_compute_model(
            accelerator,
            compute,
            table=table,
            efficiency=efficiency,
            memory_efficiency=memory_efficiency,
            default_dtype=default_dtype,
        )
        return model
    if table is not None:
        return TableComputeModel(table, default_dtype=default_dtype)
    if accelerator is None:
        raise SpecError("a compute model needs a kernel table or an accelerator with peak_flops and memory_Bps")
    return RooflineComputeModel.from_accelerator(
        accelerator, efficiency, memory_efficiency, default_dtype=default_dtype
    )
