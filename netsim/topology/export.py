"""Writing a topology out: GraphML for other tools, a layered PNG/SVG/PDF drawing for people.

Both writers go through :func:`netsim.io.atomic_file`, so a failure leaves no partial file.

* GraphML keeps every node and edge attribute; graph attributes that are dicts
  (``accelerator``, ``spec``) are stored as JSON strings, since GraphML has only scalars.
* The drawing puts each kind of device on its own row: front-end storage, front-end
  spines and leaves, host NICs and hosts at the top; node switches (NVSwitch/PCIe),
  accelerators and rail NICs in the middle, grouped by server from left to right; back-end
  leaves, spines, cores and storage at the bottom.  Cables are coloured by link class.  It is
  meant for small clusters (a few servers); for large ones it still renders, without labels.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import networkx as nx

from netsim.errors import NetsimError
from netsim.io import atomic_file

_CLASS_COLOURS = {
    "nvlink": "#76b900",
    "hccs": "#c7000b",
    "pcie": "#7f7f7f",
    "ib": "#1f77b4",
    "roce": "#9467bd",
    "ethernet": "#ff7f0e",
    "generic": "#bcbd22",
}
_KIND_STYLE = {  # marker, colour
    "accelerator": ("s", "#2ca02c"),
    "nic": ("o", "#17becf"),
    "host": ("D", "#8c564b"),
    "switch": ("^", "#1f77b4"),
    "storage": ("h", "#d62728"),
}


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise NetsimError("is a directory; give a file name", source=str(path))


def check_graphml_path(path: str | Path) -> None:
    """Raise NetsimError if ``path`` cannot take a GraphML file (it is a directory)."""
    _check_target(Path(path))


def check_plot_path(path: str | Path) -> str:
    """Return the image format of ``path`` (its suffix); NetsimError if matplotlib cannot write it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    _check_target(target)
    fmt = target.suffix.lstrip(".").lower()
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if fmt not in supported:
        raise NetsimError(
            f"cannot draw to a {target.suffix or 'suffix-less'} file; use one of "
            + ", ".join(f".{f}" for f in sorted(supported)),
            source=str(target),
        )
    return fmt


def to_graphml_graph(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` whose attributes are all GraphML scalars (dicts -> JSON strings)."""

    def scalar(value: Any) -> Any:
        if isinstance(value, bool | int | float | str):
            return value
        if value is None:
            return ""
        return json.dumps(value, sort_keys=True)

    h = nx.DiGraph()
    h.graph.update({k: scalar(v) for k, v in g.graph.items()})
    h.add_nodes_from((n, {k: scalar(v) for k, v in d.items()}) for n, d in g.nodes(data=True))
    h.add_edges_from((u, v, {k: scalar(x) for k, x in d.items()}) for u, v, d in g.edges(data=True))
    return h


def write_graphml(g: nx.DiGraph, path: str | Path) -> None:
    """Write ``g`` as GraphML to ``path`` (atomically)."""
    target = Path(path)
    _check_target(target)
    h = to_graphml_graph(g)
    with atomic_file(target, "wb") as fh:
        nx.write_graphml(h, fh)


def _row(d: dict[str, Any]) -> int:
    """Drawing row of a device, top (large) to bottom (small)."""
    kind, network, tier = d["kind"], d["network"], d["tier"]
    if network == "frontend":
        return {"storage": 9, "switch": 6 + max(1, tier), "nic": 6}.get(kind, 6)
    if kind == "host":
        return 5
    if kind == "switch" and network == "node":
        return 4
    if kind == "accelerator":
        return 3
    if kind == "nic":
        return 2
    if kind == "switch":
        return 2 - max(1, tier)
    return -3  # back-end storage


def layered_positions(g: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Positions for :func:`plot_topology`: rows by device type, servers side by side."""
    server_rows: dict[tuple[int, int], list[str]] = defaultdict(list)
    fabric_rows: dict[int, list[str]] = defaultdict(list)
    for n, d in g.nodes(data=True):
        if d["node"] >= 0:
            server_rows[(_row(d), d["node"])].append(n)
        else:
            fabric_rows[_row(d)].append(n)
    servers = sorted({s for _, s in server_rows} or {0})
    width = max((len(v) for v in server_rows.values()), default=1) + 1.0
    order = {s: i for i, s in enumerate(servers)}
    pos: dict[str, tuple[float, float]] = {}
    for (row, s), names in server_rows.items():
        x0 = order[s] * width
        step = (width - 1.0) / max(1, len(names) - 1) if len(names) > 1 else 0.0
        offset = 0.0 if len(names) > 1 else (width - 1.0) / 2
        for i, n in enumerate(names):
            pos[n] = (x0 + offset + i * step, float(row))
    total = len(servers) * width - 1.0
    for row, names in fabric_rows.items():
        step = total / len(names)
        for i, n in enumerate(names):
            pos[n] = ((i + 0.5) * step, float(row))
    return pos


def plot_topology(g: nx.DiGraph, path: str | Path) -> None:
    """Draw ``g`` with a layered layout to ``path``; the format comes from the file suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    target = Path(path)
    fmt = check_plot_path(target)
    fig = plt.figure()
    try:
        pos = layered_positions(g)
        xs = [p[0] for p in pos.values()]
        fig.set_size_inches(min(40.0, max(8.0, 0.35 * (max(xs) - min(xs) + 2))), 7.0)
        ax = fig.add_subplot(1, 1, 1)
        by_class: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = defaultdict(list)
        arcs: dict[str, list[PathPatch]] = defaultdict(list)
        for u, v, d in g.edges(data=True):
            if u < v or not g.has_edge(v, u):  # one segment per cable
                (x0, y0), (x1, y1) = pos[u], pos[v]
                if y0 == y1:  # same row (HCCS mesh, PCIe switch pairs): an arc, else they overlap
                    ctrl = ((x0 + x1) / 2, y0 - min(0.45, 0.08 * abs(x1 - x0)))
                    arc = MplPath([(x0, y0), ctrl, (x1, y1)], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
                    arcs[d["link_class"]].append(PathPatch(arc))
                else:
                    by_class[d["link_class"]].append((pos[u], pos[v]))
        handles = []
        for cls in sorted(set(by_class) | set(arcs)):
            colour = _CLASS_COLOURS.get(cls, "#000000")
            ax.add_collection(LineCollection(by_class[cls], colors=colour, linewidths=0.6, alpha=0.7, zorder=1))
            if arcs[cls]:
                ax.add_collection(
                    PatchCollection(
                        arcs[cls], facecolors="none", edgecolors=colour, linewidths=0.6, alpha=0.7, zorder=1
                    )
                )
            handles.append(Line2D([], [], color=colour, label=cls))
        kinds: dict[str, list[str]] = defaultdict(list)
        for n, d in g.nodes(data=True):
            kinds[d["kind"]].append(n)
        for kind, names in kinds.items():
            marker, colour = _KIND_STYLE.get(kind, ("o", "#000000"))
            ax.scatter(
                [pos[n][0] for n in names],
                [pos[n][1] for n in names],
                s=28,
                marker=marker,
                c=colour,
                edgecolors="black",
                linewidths=0.4,
                zorder=2,
            )
            handles.append(Line2D([], [], marker=marker, color=colour, linestyle="", label=kind))
        if g.number_of_nodes() <= 160:
            for n, (x, y) in pos.items():
                ax.annotate(n, (x, y), xytext=(0, -9), textcoords="offset points", fontsize=5, ha="center")
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        ax.set_title(f"{g.graph.get('name', 'topology')}: {g.graph.get('num_nodes', '?')} servers", fontsize=10)
        ax.autoscale()
        ax.margins(0.03, 0.08)
        ax.axis("off")
        fig.tight_layout()
        with atomic_file(target, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=150)
    finally:
        plt.close(fig)
