"""The speed goals, measured in one process on the current device, next to their analytic FLOP ratios.

MiniLM-L12-H384 shape (random weights, nothing downloaded), 512-token documents, 32-token queries, batch 128,
model-only timing interleaved across models (see `micebench latency`). Prints, for every configuration, the
measured speed-up over the cross-encoder, the FLOP ratio, the share of it achieved, and whether the goal holds.
`--arch ettin-17m|ettin-32m|...` measures the same ratios on another shape (then only the share is a goal).

    python benchmarks/latency_ratios.py [--device cuda] [--dtype bf16] [--batch 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from micebench.latency.runner import LatencyConfig, measure, write_latency

#: label -> (minimum speed-up over ce, minimum share of the FLOP ratio); None = reported only
GOALS = {
    "mice-l4+3:states": (15.0, 0.8),
    "mice-l4+3:kv": (40.0, 0.8),
    "mice-l4+3:none": (2.5, 0.8),
    "colbert:precomputed": None,  # reported, no goal
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--arch", default="minilm-l12")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--doc-len", type=int, default=512)
    parser.add_argument("--query-len", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="results")
    args = parser.parse_args()

    config = LatencyConfig(
        models=["ce", *GOALS],
        batch=args.batch,
        query_len=args.query_len,
        doc_len=args.doc_len,
        device=args.device,
        dtype=args.dtype,
        warmup=args.warmup,
        repeats=args.repeats,
        arch=args.arch,
    )
    rows, meta = measure(config)
    run = f"goals-{time.strftime('%Y%m%d-%H%M%S')}"
    path, _ = write_latency(rows, meta, Path(args.output) / "latency", run)
    print(
        f"# {meta['device_name']}, {meta['threads']} threads, torch {meta['versions'].get('torch')}, {args.dtype}, "
        f"{args.arch}, batch {args.batch}, q{args.query_len}+d{args.doc_len} tokens, model-only, "
        f"median of {args.repeats} interleaved runs"
    )
    print(f"{'model':<22}{'median ms':>11}{'docs/s':>10}{'speed-up':>10}{'FLOP ratio':>12}{'share':>8}  goal")
    met = True
    for row in rows:
        goal = GOALS.get(row["label"])
        verdict = ""
        if goal is not None:
            minimum, share = goal
            if args.arch != "minilm-l12":  # the speed-up goals are the MiniLM-L12 ones; the share holds for any shape
                minimum = None
            ok = (minimum is None or row["speedup_vs_ce"] >= minimum) and row["share_of_flop_ratio"] >= share
            met &= ok
            wanted = (f">= {minimum:g}x and " if minimum else "") + f">= {share:.0%} of FLOP ratio"
            verdict = f"{'MET' if ok else 'MISSED'} ({wanted})"
        print(
            f"{row['label']:<22}{row['median_ms']:>11.1f}{row['docs_per_s']:>10.0f}{row['speedup_vs_ce']:>9.2f}x"
            f"{row['flop_ratio_vs_ce']:>11.1f}x{row['share_of_flop_ratio']:>8.0%}  {verdict}"
        )
    print(f"all goals met: {met}; rows written to {path}")
    print(json.dumps({r["label"]: round(r["speedup_vs_ce"], 2) for r in rows}))


if __name__ == "__main__":
    main()
