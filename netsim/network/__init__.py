"""The flow-level network engine: link table, routing strategies, max-min sharing, simpy driver.

Public API: :class:`Network` (see :mod:`netsim.network.engine`), :data:`ROUTING_POLICIES`,
:func:`max_min_rates`.
"""

from netsim.network.engine import Network
from netsim.network.routing import ROUTING_POLICIES
from netsim.network.sharing import max_min_rates

__all__ = ["ROUTING_POLICIES", "Network", "max_min_rates"]
