"""NCCL's tuner and topology-search constants, loaded from data.

The numbers live in ``netsim/data/nccl/tuner.yaml`` (NCCL 2.30.7; each table names the NCCL
file and symbol it comes from).  :func:`load_constants` returns them as a
:class:`NcclConstants`, with optional overrides: a nested mapping with the same keys as the
file (``{"hw_latency_us": {"net": {"ring": {"Simple": 12.0}}}}``), which is what
``--set topology.collectives.constants.hw_latency_us.net.ring.Simple=12`` produces.

Names used throughout :mod:`netsim.collectives.nccl`:

* protocols: ``LL``, ``LL128``, ``Simple``;
* NCCL algorithms: ``tree``, ``ring``, ``collnet_direct``, ``collnet_chain``, ``nvls``,
  ``nvls_tree``, ``pat``;
* architectures (NCCL's compute-capability index): ``volta``, ``ampere``, ``hopper``,
  ``blackwell``;
* hardware classes of a step: ``nvlink``, ``pcie``, ``net``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from netsim.errors import SpecError

__all__ = ["ALGORITHMS", "ARCHES", "CONSTANTS_PATH", "PROTOCOLS", "NcclConstants", "load_constants"]

CONSTANTS_PATH = Path(__file__).resolve().parents[2] / "data" / "nccl" / "tuner.yaml"
PROTOCOLS: tuple[str, ...] = ("LL", "LL128", "Simple")
ALGORITHMS: tuple[str, ...] = ("tree", "ring", "collnet_direct", "collnet_chain", "nvls", "nvls_tree", "pat")
ARCHES: tuple[str, ...] = ("volta", "ampere", "hopper", "blackwell")
HW_CLASSES: tuple[str, ...] = ("nvlink", "pcie", "net")


@dataclass(frozen=True)
class NcclConstants:
    """The constants of ``tuner.yaml`` as a read-only mapping tree (see the file for units and
    sources); :meth:`get` reads one value by its path."""

    data: Mapping[str, Any]

    @property
    def version(self) -> str:
        return str(self.data["version"])

    def get(self, *path: str | int) -> Any:
        node: Any = self.data
        for key in path:
            node = node[key]
        return node

    def base_latency_us(self, algo: str, proto: str) -> float:
        return float(self.data["base_latency_us"][algo][proto])

    def hw_latency_us(self, hw: str, algo: str, proto: str) -> float:
        return float(self.data["hw_latency_us"][hw][algo][proto])

    def per_channel_max_bw(self, table: str, arch: str, node_index: int) -> float:
        """``perChMax...Bws[arch][index2]`` (``node_index``: 0 one node, 1 two, 2 more)."""
        return float(self.data["per_channel_max_bw_GBps"][table][arch][node_index])

    def refinement(self, name: str) -> Any:
        return self.data["refinements"][name]


def _merge(base: dict[str, Any], over: Mapping[str, Any], path: str, source: str) -> None:
    for key, value in over.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in base:
            allowed = ", ".join(str(k) for k in base)
            raise SpecError(
                f"unknown NCCL constant {where!r}; allowed here: {allowed}",
                source=source,
                field="collectives.constants",
            )
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise SpecError(
                    f"{where} is a table; give its entries (e.g. {where}.<key>=value)",
                    source=source,
                    field="collectives.constants",
                )
            _merge(base[key], value, where, source)
        elif isinstance(base[key], list):
            if not isinstance(value, list) or len(value) != len(base[key]):
                raise SpecError(
                    f"{where} must be a list of {len(base[key])} numbers", source=source, field="collectives.constants"
                )
            base[key] = [_number(v, where, source) for v in value]
        elif isinstance(base[key], str):
            base[key] = str(value)
        else:
            base[key] = _number(value, where, source)


def _number(value: Any, where: str, source: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SpecError(
            f"{where} must be a number, got {value!r}", source=source, field="collectives.constants"
        ) from None
    if not math.isfinite(x) or x < 0:
        raise SpecError(f"{where} must be finite and >= 0, got {value!r}", source=source, field="collectives.constants")
    return x


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    with open(CONSTANTS_PATH) as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):  # pragma: no cover - shipped data
        raise AssertionError(f"{CONSTANTS_PATH}: not a mapping")
    return data


def load_constants(overrides: Mapping[str, Any] | None = None, *, source: str = "topology") -> NcclConstants:
    """NCCL's constants (``netsim/data/nccl/tuner.yaml``), with ``overrides`` merged in.

    Raises:
        SpecError: an override names an unknown constant or gives a non-number.
    """
    data = copy.deepcopy(_defaults())
    if overrides:
        _merge(data, overrides, "", source)
    return NcclConstants(data)
