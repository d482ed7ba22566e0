"""Flow lists from CSV files (``netsim flows``): read, validate, simulate, write tables.

Input columns: ``src``, ``dst`` (device names), ``bytes`` (a size such as ``64MiB``; a plain
number is a count of bytes; at most 2**60), ``start_s`` (a number of seconds or a duration such as
``1.5us``), and optionally
``path`` (device names joined by ``>``) pinning the flow's route.  Optional ``traffic_class``
and ``label`` columns are carried into the results.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from netsim.errors import LimitError, NetsimError, TraceError
from netsim.io import atomic_dir, check_output_dir, write_table
from netsim.limits import MAX_FLOW_ROWS, MAX_TEXT_BYTES, check_file_size, check_quantity, size_check_enabled
from netsim.network.engine import Network
from netsim.units import parse_bytes, parse_duration

REQUIRED = ("src", "dst", "bytes", "start_s")
OPTIONAL = ("path", "traffic_class", "label")


def read_flows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a flows CSV; every problem is a one-line TraceError naming the row."""
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise TraceError("file not found", source=src)
    check_file_size(p, MAX_TEXT_BYTES, "a flows file")
    try:
        with warnings.catch_warnings():
            # without an index column pandas refuses a longer row, but only warns of a longer
            # first row (it would otherwise shift that file's columns under an implicit index)
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True, comment="#", index_col=False)
    except pd.errors.ParserWarning:
        raise TraceError("more fields than the header", source=src, field="row 2") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise TraceError(f"not a readable CSV file ({' '.join(str(exc).split())})", source=src) from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise TraceError(
            f"missing column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)} "
            f"(optional: {', '.join(OPTIONAL)})",
            source=src,
        )
    unknown = [c for c in df.columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise TraceError(f"unknown column {unknown[0]!r}; allowed: {', '.join(REQUIRED + OPTIONAL)}", source=src)
    if df.empty:
        raise TraceError("no flows in file", source=src)
    if len(df) > MAX_FLOW_ROWS and size_check_enabled():
        raise LimitError(
            f"{len(df):,} flows; the exact flow model takes minutes beyond {MAX_FLOW_ROWS:,} "
            "(pass --no-size-check to run them anyway)",
            source=src,
        )
    nbytes, start = [], []
    for i, (b, t) in enumerate(zip(df["bytes"], df["start_s"], strict=True)):
        row = f"row {i + 2}"
        try:
            nb = parse_bytes(b.strip(), field=f"{row}.bytes")
            st = parse_duration(t.strip(), field=f"{row}.start_s")
        except NetsimError as exc:
            raise exc.with_source(src) from None
        if nb < 0 or nb != int(nb):
            raise TraceError(f"bytes must be a whole number >= 0, got {b!r}", source=src, field=f"{row}.bytes")
        if st < 0:
            raise TraceError(f"start_s must be >= 0, got {t!r}", source=src, field=f"{row}.start_s")
        check_quantity(nb, "bytes", f"{row}.bytes", src)
        check_quantity(st, "duration", f"{row}.start_s", src)
        nbytes.append(nb)
        start.append(st)
    out = pd.DataFrame({"src": df["src"].str.strip(), "dst": df["dst"].str.strip(), "bytes": nbytes, "start_s": start})
    same = (out["src"] == out["dst"]).to_numpy().nonzero()[0]
    if same.size:
        i = int(same[0])
        raise TraceError(f"a flow from {out['src'][i]!r} to itself", source=src, field=f"row {i + 2}.dst")
    for col in OPTIONAL:
        if col in df.columns:
            out[col] = df[col].str.strip()
    out.attrs["source"] = src
    return out


@dataclass
class FlowRunResult:
    num_flows: int
    makespan_s: float
    busiest_link: str
    busiest_peak: float
    flows: pd.DataFrame
    links: pd.DataFrame


def run_flows(
    graph: nx.DiGraph,
    table: pd.DataFrame,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    **engine: Any,
) -> FlowRunResult:
    """Simulate the flows of ``table`` on ``graph``; write flows/links tables to ``out_dir``
    (an existing one is replaced only when netsim wrote it and ``force`` is given)."""
    src = str(table.attrs.get("source", "flows"))
    if out_dir is not None:
        check_output_dir(out_dir, force=force)
    net = Network(graph, **engine)
    known = net.links.index
    for col in ("src", "dst"):
        bad = [(i, d) for i, d in enumerate(table[col]) if d not in known]
        if bad:
            i, d = bad[0]
            examples = ", ".join(sorted(str(k) for k in known)[:3])
            raise TraceError(
                f"unknown device {d!r} (this topology's devices include {examples}; `netsim topology show` lists them)",
                source=src,
                field=f"row {i + 2}.{col}",
            )
    has_path = "path" in table.columns
    has_cls = "traffic_class" in table.columns
    has_lab = "label" in table.columns
    if not has_path and not has_cls and not has_lab:
        net.submit_many(
            table["src"].to_numpy(), table["dst"].to_numpy(), table["bytes"].to_numpy(), table["start_s"].to_numpy()
        )
    else:
        for i, r in enumerate(table.itertuples(index=False)):
            path = None
            if has_path and r.path:
                path = [p.strip() for p in str(r.path).split(">")]
            try:
                net.submit(
                    r.src,
                    r.dst,
                    r.bytes,
                    r.start_s,
                    path=path,
                    traffic_class=(r.traffic_class or "other") if has_cls else "other",
                    label=(r.label or "") if has_lab else "",
                )
            except NetsimError as exc:
                exc.field = f"row {i + 2}.{exc.field or 'path'}"
                raise exc.with_source(src) from None
    net.run()
    flows = net.flow_records()
    links = net.link_records()
    top = links.sort_values(["peak_utilization", "bytes"], ascending=False).iloc[0]
    if out_dir is not None:
        with atomic_dir(out_dir, force=force, kind="flows") as tmp:
            write_table(flows, tmp, "flows")
            write_table(links, tmp, "links")
    return FlowRunResult(len(flows), net.makespan_s, str(top["link"]), float(top["peak_utilization"]), flows, links)
