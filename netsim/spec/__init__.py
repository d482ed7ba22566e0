"""Deprecated alias of :mod:`netsim.config` (renamed in 0.2: test tools read ``spec/`` as a test folder).

``import netsim.spec.topology`` and friends keep working for one release and warn once; new code
imports :mod:`netsim.config`.
"""

from __future__ import annotations

import importlib
import sys
import warnings

warnings.warn("netsim.spec is deprecated: import netsim.config instead", DeprecationWarning, stacklevel=2)

for _name in ("common", "scenario", "topology", "workload"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"netsim.config.{_name}")

from netsim.config import *  # noqa: E402,F403
