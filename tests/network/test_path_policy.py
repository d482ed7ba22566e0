"""Network path policies are objects from one registry; the router never compares their names."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.network import PATH_POLICIES, ROUTING_POLICIES, PathPolicy
from netsim.network.links import LinkTable
from netsim.network.path_policy import Ecmp, PathChoice
from netsim.network.routing import Router
from netsim.topology import load_topology


def _setup() -> tuple[object, LinkTable, np.ndarray, np.ndarray]:
    g = load_topology("dgx-h100", nodes=2)
    links = LinkTable.from_graph(g)
    acc = np.array([i for i, k in enumerate(links.names) if g.nodes[k].get("kind") == "accelerator"])
    src = np.repeat(acc, acc.size)
    dst = np.tile(acc, acc.size)
    keep = src != dst
    return g, links, src[keep], dst[keep]


def test_registry_names_are_the_spec_names() -> None:
    assert (
        list(ROUTING_POLICIES)
        == PATH_POLICIES.names()
        == ["shortest", "ecmp", "ecmp-pair", "spray", "pxn", "dmodk", "dmodk-pxn"]
    )
    assert all(isinstance(PATH_POLICIES.get(n), PathPolicy) for n in ROUTING_POLICIES)


def test_unknown_name_is_one_line_naming_the_allowed_values() -> None:
    g, links, _, _ = _setup()
    with pytest.raises(SpecError) as exc:
        Router(g, links, "sprey")  # type: ignore[arg-type]
    assert exc.value.field == "routing"
    allowed = "shortest, ecmp, ecmp-pair, spray, pxn, dmodk, dmodk-pxn"
    assert f"unknown routing policy 'sprey'; allowed: {allowed}" in exc.value.one_line()


def test_a_policy_object_is_passed_in() -> None:
    g, links, src, dst = _setup()
    ids = np.arange(src.size)
    by_name = Router(g, links, "ecmp", seed=3).route(src, dst, ids)
    by_obj = Router(g, links, PathPolicy("mine", Ecmp()), seed=3).route(src, dst, ids)
    assert np.array_equal(by_name.link, by_obj.link) and np.array_equal(by_name.weight, by_obj.weight)

    class Last(PathChoice):
        """Always the last equal-cost candidate: a strategy no name in the registry gives."""

        def pick(self, h: np.ndarray, n: np.ndarray | int) -> np.ndarray:
            return (np.broadcast_to(np.asarray(n), h.shape) - 1).astype(np.int64)

        def pick_one(self, h: np.uint64, n: int) -> int:
            return n - 1

    first = Router(g, links, "shortest").route(src, dst, ids)
    last = Router(g, links, PathPolicy("last", Last())).route(src, dst, ids)
    assert np.allclose(last.hops, first.hops)  # still least-cost paths
    assert not np.array_equal(last.link, first.link)  # but other ones
    spray = Router(g, links, "spray").route(src, dst, ids)
    assert spray.weight.min() < 1.0  # split over equal-cost paths
