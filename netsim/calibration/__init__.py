"""Calibration: measured kernel tables, roofline fallback, the kernel profiler and fitted link
efficiencies.

Modules: :mod:`netsim.calibration.kernels` (kernel catalogue and measured tables),
:mod:`netsim.calibration.roofline` (roofline compute model), :mod:`netsim.calibration.compute`
(the ``ComputeModel`` API the replay calls), :mod:`netsim.calibration.profiler` (torch profiler,
imports torch lazily).  Import from the submodules; this package imports nothing on purpose so
that ``import netsim.calibration`` never pulls in torch.
"""
