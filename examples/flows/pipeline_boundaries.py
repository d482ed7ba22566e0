"""Write the pipeline stage-boundary flows of Narayanan et al.'s 1T run as a ``netsim flows`` CSV.

The GPT 1T row of Table 1 of arXiv 2104.04473 (t = 8, p = 64, d = 6 on 384 DGX A100 servers):
netsim's rank layout puts stage ``p``, DP replica ``j`` on server ``6p + j`` and TP rank ``t`` on
its GPU ``t``.  In one 1F1B steady-state tick every stage sends its activations to the next
stage and its gradients to the previous one at once, GPU ``t`` to GPU ``t``; with Megatron's
scatter/gather each TP rank sends 1/8 of a micro-batch's 2048 x 25600 fp16 activations
(13,107,200 bytes).  Per rail the traffic is two shift permutations by 6 servers.

    python examples/flows/pipeline_boundaries.py [--out FILE]

Default output: ``pipeline_boundaries.csv`` next to this script (git ignores it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

TP, PP, DP = 8, 64, 6
SEQ, MICRO_BATCH, HIDDEN, FP16_BYTES = 2048, 1, 25600, 2


def rows() -> list[str]:
    """CSV lines: a header and one forward and one backward flow per boundary, replica and TP rank."""
    nbytes = SEQ * MICRO_BATCH * HIDDEN * FP16_BYTES // TP
    out = ["src,dst,bytes,start_s,path,traffic_class,label"]
    for p in range(PP - 1):
        for j in range(DP):
            a, b = p * DP + j, (p + 1) * DP + j
            for t in range(TP):
                out.append(f"n{a}.g{t},n{b}.g{t},{nbytes},0,,pp,fwd{p}")
                out.append(f"n{b}.g{t},n{a}.g{t},{nbytes},0,,pp,bwd{p + 1}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".csv"), help="the CSV to write")
    args = ap.parse_args()
    lines = rows()
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} flows to {args.out}")


if __name__ == "__main__":
    main()
