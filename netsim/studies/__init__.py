"""Studies: multi-run experiments that answer one question end to end and write a report.

- :mod:`netsim.studies.locmoe`: Hash vs Switch vs LocMoE routing (and EPLB) on Ascend 910A and
  DGX H100 clusters, driven by routing traces from the router lab (``netsim study locmoe``).
"""
