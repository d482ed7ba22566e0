"""Measured traces: importers (PyTorch profiler / Kineto Chrome JSON, with its shaped operators
as a kernel table; Chakra execution traces in their binary ``.et`` and JSON forms, compiled into
the replay's op graph) and exporters (Perfetto / Chrome trace JSON).

Import from the submodules (:mod:`netsim.traces.kineto`, :mod:`netsim.traces.kineto_kernels`,
:mod:`netsim.traces.chakra`, :mod:`netsim.traces.chakra_plan`); this package imports nothing on
purpose.
"""
