"""Collective models as objects (:mod:`netsim.collectives.models`): the registry lists the three
spec names, the executor asks the object it is given (a custom one included) instead of
comparing names, and an unknown name is one line naming the allowed ones."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from netsim.collectives import COLLECTIVE_MODELS, CollectiveError, CollectiveModel, accelerators, run_collective
from netsim.collectives.executor import result_of, run_disjoint_collectives
from netsim.collectives.models import MODELS, Coflow, Exact, Stream, collective_model
from netsim.collectives.reference import star_topology
from netsim.config.scenario import ScenarioOptions
from netsim.network.engine import Network

MiB = 2**20


class RingsAsStreams(CollectiveModel):
    """A user's model: stream plans, no coflows (what ``stream`` does, under another name)."""

    name = "rings-as-streams"
    stream_plans = True


class NoDirectCoflow(Coflow):
    """A user's model: coflow phases, but a direct all-to-all goes through its (stream) plan."""

    def direct_coflow(self, op: str, call: typing.Any) -> bool:
        return False


def test_the_registry_lists_the_three_models_under_their_spec_names() -> None:
    assert COLLECTIVE_MODELS.names() == ["exact", "stream", "coflow"] == list(MODELS)
    assert [type(m) for _, m in COLLECTIVE_MODELS.items()] == [Exact, Stream, Coflow]
    assert all(m.name == n for n, m in COLLECTIVE_MODELS.items())
    # the scenario schema accepts exactly these names and the auto rule
    field = ScenarioOptions.model_fields["collective_model"].annotation
    assert set(typing.get_args(field)) == {"auto", *MODELS}


def test_a_name_resolves_to_its_object_and_an_object_to_itself() -> None:
    assert collective_model("coflow") is COLLECTIVE_MODELS.get("coflow")
    own = RingsAsStreams()
    assert collective_model(own) is own
    with pytest.raises(CollectiveError) as err:
        collective_model("fluid")
    assert str(err.value).splitlines()[0].endswith("unknown collective model 'fluid'; allowed: exact, stream, coflow")
    assert "\n" not in str(err.value)


def test_the_models_say_what_they_do() -> None:
    flags = {n: (m.stream_plans, m.coflow, m.unites_instances) for n, m in COLLECTIVE_MODELS.items()}
    assert flags == {"exact": (False, False, False), "stream": (True, False, True), "coflow": (True, True, True)}


def _flows_and_time(model: str | CollectiveModel, op: str = "all_reduce", n: int = 8) -> tuple[int, float]:
    g = star_topology(n, 100e9, 0.5e-6)
    net = Network(g)
    proc = run_collective(net, op, accelerators(g), 64 * MiB, model=model)
    net.run()
    return net.num_flows, result_of(proc).time_s


def test_a_custom_model_object_is_asked_not_its_name() -> None:
    # a ring all-reduce of 8: the exact plan has 8 x 14 flows, a stream plan 8
    assert _flows_and_time("exact")[0] == 8 * 14
    assert _flows_and_time(RingsAsStreams()) == _flows_and_time("stream")
    assert _flows_and_time(RingsAsStreams())[0] == 8


def test_a_custom_model_can_turn_the_direct_coflow_off() -> None:
    # the coflow model moves a direct all-to-all as one coflow without a plan; the custom model
    # builds the plan, whose transfers still start together and move as one coflow: same flows
    flows, time_s = _flows_and_time("coflow", op="all_to_all")
    own_flows, own_time_s = _flows_and_time(NoDirectCoflow(), op="all_to_all")
    assert own_flows == flows == 8 * 7
    assert own_time_s == pytest.approx(time_s, rel=1e-6)


def test_lockstep_instances_are_united_when_the_model_says_so() -> None:
    g = star_topology(8, 100e9, 0.5e-6)
    devs = accelerators(g)
    groups = [devs[:4], devs[4:]]
    from netsim.collectives.cost import IdealCost

    for model, united in (("exact", False), ("stream", True), (RingsAsStreams(), True), (Exact(), False)):
        net = Network(g)
        ev = run_disjoint_collectives(net, "all_reduce", groups, 16 * MiB, model=model, cost=IdealCost())
        assert (ev is not None) == united
        if ev is not None:
            net.run()
            assert np.isfinite(result_of(ev).time_s)
