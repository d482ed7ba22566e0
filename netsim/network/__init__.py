"""The flow-level network engine: link table, routing strategies, max-min sharing, simpy driver.

Public API: :class:`Network` (see :mod:`netsim.network.engine`), the path policies
(:class:`PathPolicy` objects registered in :data:`PATH_POLICIES`; :data:`ROUTING_POLICIES` are
their names), :func:`max_min_rates`.
"""

from netsim.network.engine import Network
from netsim.network.path_policy import PATH_POLICIES, ROUTING_POLICIES, PathPolicy
from netsim.network.sharing import max_min_rates

__all__ = ["PATH_POLICIES", "ROUTING_POLICIES", "Network", "PathPolicy", "max_min_rates"]
