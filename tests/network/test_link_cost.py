"""Routing on link cost (inverse bandwidth by default, or the graph's ``cost``) and the forwarding
rule (accelerators never relay) on explicit graphs, through ``netsim flows``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from netsim.errors import RoutingError
from netsim.network import Network
from netsim.topology import load_topology
from tests.cli_run import run_cli

# A box of four hosts with a 400G switch inside and 100G uplinks to a leaf shared with the rest of
# the cluster; the leaf is listed first, so it comes first in device order.
BOX = """\
name: box
nodes:
  - {name: leaf, kind: switch}
  - {name: sw0, kind: switch}
  - {name: h0, kind: accelerator}
  - {name: h1, kind: accelerator}
  - {name: h2, kind: accelerator}
  - {name: h3, kind: accelerator}
links:
  - {a: h0, b: sw0, bandwidth: 400Gbps}
  - {a: h1, b: sw0, bandwidth: 400Gbps}
  - {a: h2, b: sw0, bandwidth: 400Gbps}
  - {a: h3, b: sw0, bandwidth: 400Gbps}
  - {a: h0, b: leaf, bandwidth: 100Gbps{cost}}
  - {a: h1, b: leaf, bandwidth: 100Gbps{cost}}
  - {a: h2, b: leaf, bandwidth: 100Gbps{cost}}
  - {a: h3, b: leaf, bandwidth: 100Gbps{cost}}
"""


def box(tmp_path: Path, uplink_cost: float | None = None) -> Path:
    p = tmp_path / "box.yaml"
    p.write_text(BOX.replace("{cost}", "" if uplink_cost is None else f", cost: {uplink_cost}"))
    return p


@pytest.mark.parametrize("routing", ["shortest", "ecmp", "spray"])
def test_traffic_inside_the_box_takes_the_fast_switch(tmp_path: Path, routing: str, capsys) -> None:  # type: ignore[no-untyped-def]
    # h0 -> h1 and h2 -> h3, 5 MB each: over the 400G (50 GB/s) switch 100 us, over the shared
    # 100G (12.5 GB/s) leaf 400 us; hop counts are equal (two links either way)
    csv = tmp_path / "flows.csv"
    csv.write_text("src,dst,bytes,start_s\nh0,h1,5MB,0\nh2,h3,5MB,0\n")
    code, out, err = run_cli(
        ["flows", str(csv), "-t", str(box(tmp_path)), "--routing", routing, "-o", str(tmp_path / "out")], capsys
    )
    assert code == 0, err
    assert "makespan 100.000 us" in out
    links = pd.read_csv(tmp_path / "out" / "links.csv").set_index("link")
    assert links.loc[[n for n in links.index if "leaf" in n], "bytes"].sum() == 0


def test_a_link_cost_overrides_the_bandwidth_default(tmp_path: Path) -> None:
    # uplinks at cost 0.1 (below the switch's 0.25 per link): the leaf path is now the cheaper one
    net = Network(load_topology(str(box(tmp_path, uplink_cost=0.1))), routing="shortest")
    net.submit("h0", "h1", 5e6)
    net.run()
    assert net.makespan_s == pytest.approx(5e6 / 12.5e9, rel=1e-12)


def test_ecmp_stays_among_equal_cost_paths(tmp_path: Path) -> None:
    # a second 400G switch in the box: spraying splits h0 -> h1 over both switches, not the leaf
    text = BOX.replace("{cost}", "") + "".join(f"  - {{a: h{i}, b: sw1, bandwidth: 400Gbps}}\n" for i in range(4))
    sw0 = "  - {name: sw0, kind: switch}\n"
    text = text.replace(sw0, sw0 + "  - {name: sw1, kind: switch}\n")
    p = tmp_path / "box2.yaml"
    p.write_text(text)
    net = Network(load_topology(str(p)), routing="spray")
    net.submit("h0", "h1", 5e6)
    net.run()
    links = net.link_records().set_index("link")["bytes"]
    assert links["h0->sw0"] == pytest.approx(2.5e6) and links["h0->sw1"] == pytest.approx(2.5e6)
    assert net.makespan_s == pytest.approx(5e6 / 100e9, rel=1e-12)


RELAY = """\
name: relay
nodes:
  - {name: h0, kind: accelerator}
  - {name: hx, kind: accelerator}
  - {name: h2, kind: accelerator}
  - {name: sw0, kind: switch}
  - {name: sw1, kind: switch}
links:
  - {a: h0, b: sw0, bandwidth: 100Gbps}
  - {a: hx, b: sw0, bandwidth: 100Gbps}
  - {a: hx, b: sw1, bandwidth: 100Gbps}
  - {a: h2, b: sw1, bandwidth: 100Gbps}
"""


def test_an_accelerator_does_not_relay_and_the_error_says_so(tmp_path: Path) -> None:
    p = tmp_path / "relay.yaml"
    p.write_text(RELAY)
    net = Network(load_topology(str(p)))
    net.submit("h0", "h2", 1e6)
    with pytest.raises(RoutingError, match="relay through accelerator hx"):
        net.run()


def test_a_longer_path_over_switches_beats_relaying_through_an_accelerator(tmp_path: Path) -> None:
    p = tmp_path / "relay2.yaml"
    p.write_text(
        RELAY.replace(
            "  - {name: sw1, kind: switch}\n", "  - {name: sw1, kind: switch}\n  - {name: sw2, kind: switch}\n"
        )
        + "  - {a: sw0, b: sw2, bandwidth: 100Gbps}\n  - {a: sw2, b: sw1, bandwidth: 100Gbps}\n"
    )
    net = Network(load_topology(str(p)), routing="shortest")
    net.submit("h0", "h2", 1e6)
    net.run()
    links = net.link_records().set_index("link")["bytes"]
    assert links["sw0->sw2"] == pytest.approx(1e6)
    assert links["sw0->hx"] == 0 and links["hx->sw1"] == 0
