"""End-to-end re-ranking time of MICE (on the fly and from a precomputed store) versus the cross-encoder.

Both rankers use the same weights (the MICE is converted from the cross-encoder; untrained MICE scores are
meaningless, speed is what this measures). Every ranker re-ranks the same candidates frame (the TREC DL 2019
BM25 top-100 by default) through `Ranker.rerank`, tokenisation included; the store is built first (an offline
cost, reported separately). Goal on 2 CPU cores: MICE-l2+2 with a store >= 8x faster than `ce`.

    python benchmarks/mice_vs_ce.py --dataset trec-dl-19 --checkpoint minilm-l6 --merge-layer 2 --top-layers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from micebench import load_dataset, load_ranker
from micebench.firststage.candidates import first_stage
from micebench.frames import candidates_frame
from micebench.store.precompute import precompute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="trec-dl-19")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--checkpoint", default="minilm-l6")
    parser.add_argument("--merge-layer", type=int, default=2)
    parser.add_argument("--top-layers", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--store-dtype", default="fp32")
    parser.add_argument("--work-dir", default=None, help="Where stores are built (default: a temporary folder).")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset, args.data_dir)
    candidates = first_stage(dataset, "auto", args.top_k)
    frame = candidates_frame(dataset, candidates, with_text=True)
    shape = dict(merge_layer=args.merge_layer, top_layers=args.top_layers)
    torch.manual_seed(0)
    ce = load_ranker("ce", checkpoint=args.checkpoint, device=args.device)
    torch.manual_seed(0)
    mice = load_ranker("mice", checkpoint=args.checkpoint, device=args.device, untrained=True, **shape)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="micebench-bench-"))
    print(
        f"{dataset.name}: {frame.qid.nunique()} queries, {len(frame)} pairs; device={args.device}, "
        f"threads={torch.get_num_threads()}, torch {torch.__version__}"
    )

    stored = {}
    for mode in ("states", "kv"):
        start = time.perf_counter()
        folder = precompute(mice, dataset, work / f"store-{mode}", mode, args.store_dtype, overwrite=True)
        print(f"precompute {mode:<6} {time.perf_counter() - start:7.1f} s (offline, whole corpus of {dataset.name})")
        stored[mode] = load_ranker(
            "mice", checkpoint=args.checkpoint, device=args.device, untrained=True, precomputed=str(folder), **shape
        )
        stored[mode].model.load_state_dict(mice.model.state_dict())

    timings = {}
    for name, ranker in [
        ("ce", ce),
        (f"{mice.label} on the fly", mice),
        (f"{mice.label} store:states", stored["states"]),
        (f"{mice.label} store:kv", stored["kv"]),
    ]:
        start = time.perf_counter()
        ranker.rerank(frame)
        timings[name] = time.perf_counter() - start
    for name, seconds in timings.items():
        print(
            f"{name:<28} {seconds:8.2f} s  {len(frame) / seconds:8.0f} docs/s  "
            f"speed-up vs ce {timings['ce'] / seconds:5.1f}x"
        )


if __name__ == "__main__":
    main()
