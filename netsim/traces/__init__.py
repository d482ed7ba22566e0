"""Measured traces: importers (PyTorch profiler / Kineto Chrome JSON, Chakra execution traces in
JSON form) and exporters (Perfetto / Chrome trace JSON).

Import from the submodules (:mod:`netsim.traces.kineto`, :mod:`netsim.traces.chakra`); this
package imports nothing on purpose.
"""
