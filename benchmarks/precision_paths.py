"""Every ranker family on every CPU compute path (fp32, bf16, int8), in one process, interleaved, with ratios.

Three parts, each printed as a table (and all of it as one JSON under `benchmarks/results/`):

1. **throughput**: `ce`, `mask2`, `mice-l4+3:states` and `colbert:precomputed` (MiniLM-L12-H384 shape, random
   weights, `micebench latency`'s timed calls), every model on every path, interleaved in one run; docs/s, the
   speed-up of each path over the same model in fp32, and each model against `ce` at equal precision.
2. **ce against ONNX Runtime**: the same cross-encoder weights (`--ce`, default the trained one if present, else
   the packaged all-MiniLM-L6-v2 with a seeded head) on the same TREC DL 2019 BM25 pairs and the same padded
   batches (`--max-length` tokens at most): micebench `ce` in fp32, bf16, int8 and on its ONNX Runtime backend
   (`onnx-fp32`, `onnx-int8`: MatMul weights int8, head fp32) against ONNX Runtime as a practitioner runs it
   (`ort-fp32`, `ort-int8`: `onnxruntime.quantization.quantize_dynamic` with its defaults, QInt8 weights);
   pairs/s, ratios, and the largest score difference from micebench fp32.
3. **quality**: nDCG@10 of each path on TREC DL 2019 (BM25 top-`--depth`, every judged query) and SciFact (BM25
   top-`--depth`, every judged test query or the first `--scifact-queries`), with trained models: `dense` (the
   packaged all-MiniLM-L6-v2, a trained bi-encoder) always, the cross-encoder and MICE when trained checkpoints are
   given (`--ce`, `--mice`, or found at their default places); each path's difference from fp32 in points with
   the 95% confidence interval of the per-query differences and the paired t-test's p, and its largest score
   difference from fp32 over those pairs.

    python benchmarks/precision_paths.py [--parts throughput,onnx,quality] [--threads 1] [--repeats 3]

Needs `pip install 'micebench[int8,onnx]'` (torchao; onnxruntime, onnx, onnxscript).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PATHS = ("fp32", "bf16", "int8")
TRAINED_CE = "checkpoints/train-demo/ce/best"  # make train-demo's fine-tuned cross-encoder
TRAINED_MICE = "checkpoints/train-demo/mice-l2+2/best"  # and its distilled MICE


def cpu_model() -> str:
    """lscpu's model name (the CPU the figures belong to)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Part 1: every family on every path, one latency run (interleaved), ratios within it."""
    from micebench.latency.runner import LatencyConfig, measure

    config = LatencyConfig(
        models=["ce", "mask2", "mice-l4+3:states", "colbert:precomputed"],
        batch=args.batch,
        query_len=32,
        doc_len=args.doc_len,
        device="cpu",
        dtype=",".join(PATHS),
        warmup=1,
        repeats=args.repeats,
        arch="minilm-l12",
        threads=args.threads,
    )
    rows, meta = measure(config)
    fp32 = {r["label"]: r["median_ms"] for r in rows if r["precision"] == "fp32"}
    print(
        f"\n## throughput: MiniLM-L12 shape, random weights, batch {args.batch}, q32+d{args.doc_len} tokens, "
        f"{meta['threads']} thread(s), median of {args.repeats} interleaved calls; busy={meta['load']['busy']}"
    )
    print(f"{'model':<22}{'path':<6}{'docs/s':>9}{'vs fp32':>9}{'vs ce (same path)':>19}{'peak MB':>9}")
    out = []
    for r in rows:
        vs_fp32 = fp32[r["label"]] / r["median_ms"]
        peak = r.get("peak_memory_mb")
        print(
            f"{r['label']:<22}{r['precision']:<6}{r['docs_per_s']:>9.1f}{vs_fp32:>8.2f}x"
            f"{r.get('speedup_vs_ce', float('nan')):>18.2f}x{'–' if peak is None else f'{peak:.0f}':>9}"
        )
        out.append(
            {
                k: r.get(k)
                for k in (
                    "label",
                    "precision",
                    "median_ms",
                    "p10_ms",
                    "p90_ms",
                    "docs_per_s",
                    "speedup_vs_ce",
                    "peak_memory_mb",
                    "busy",
                )
            }
            | {"vs_fp32": vs_fp32}
        )
    return out


def trec_pairs(count: int) -> tuple[list[tuple[str, list[str]]], Any]:
    """The first `count` BM25 pairs of TREC DL 2019 (judged queries in id order), as (query, docs) groups."""
    from micebench import load_dataset
    from micebench.firststage.candidates import first_stage
    from micebench.frames import candidates_frame

    dataset = load_dataset("trec-dl-2019-passage")
    frame = candidates_frame(dataset, first_stage(dataset, "auto", 100), with_text=True).head(count)
    groups = [(rows["query"].iat[0], rows["text"].tolist()) for _, rows in frame.groupby("qid", sort=False)]
    return groups, dataset


def onnx_models(model: Any, batch: dict[str, Any], folder: str) -> tuple[str, str]:
    """The cross-encoder exported to ONNX (fp32) and its dynamic int8 quantisation (QInt8 weights)."""
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")  # the TorchScript exporter's deprecation and tracer notes
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's advice to pre-process
    import inspect

    from onnxruntime.quantization import QuantType, quantize_dynamic

    signature = list(inspect.signature(model.forward).parameters)
    names = sorted(batch, key=signature.index)  # the exporter names the inputs in the order forward takes them
    fp32, int8 = f"{folder}/ce.onnx", f"{folder}/ce-int8.onnx"
    example = {n: batch[n] for n in names}
    # traced with a padded row: from an unpadded batch transformers drops the mask, and the graph would ignore it
    example["attention_mask"] = batch["attention_mask"].clone()
    example["attention_mask"][-1, -1] = 0
    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")  # SDPA's padding mask does not survive the TorchScript trace
    try:
        torch.onnx.export(
            model, (), fp32, kwargs=example, input_names=names, output_names=["logits"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names}, dynamo=False,
        )  # fmt: skip
    finally:
        model.set_attn_implementation(attention)
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    return fp32, int8


def against_onnx(args: argparse.Namespace, checkpoint: str) -> dict[str, Any]:
    """Part 2: micebench `ce` on each path against ONNX Runtime fp32 and dynamic int8, same weights and batches."""
    import onnxruntime as ort
    import torch

    from micebench import load_ranker

    groups, _ = trec_pairs(args.pairs)
    rankers = {}
    for path in (*PATHS, "onnx-fp32", "onnx-int8"):  # the last two: micebench's own ONNX Runtime backend
        torch.manual_seed(0)  # the packaged bi-encoder gets the same fresh head on every path
        rankers[path] = load_ranker(
            "ce", checkpoint=checkpoint, device="cpu", dtype=path, batch_size=args.batch, max_length=args.max_length
        )
    ref = rankers["fp32"]
    batches = [b for query, docs in groups for _, b in ref.host_batches(query, docs)]
    pairs = sum(len(b["input_ids"]) for b in batches)
    tokens = float(np.mean([b["attention_mask"].sum(1).float().mean().item() for b in batches]))
    folder = tempfile.mkdtemp(prefix="micebench-onnx-")
    fp32_file, int8_file = onnx_models(ref.model, batches[0], folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    sessions = {  # the reference: ONNX Runtime as a practitioner runs it (quantize_dynamic's defaults)
        p: ort.InferenceSession(f, options, providers=["CPUExecutionProvider"])
        for p, f in (("ort-fp32", fp32_file), ("ort-int8", int8_file))
    }
    feeds = [{k: v.numpy() for k, v in b.items()} for b in batches]

    def torch_pass(path: str) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([rankers[path].score_batch(b).numpy() for b in batches])

    def onnx_pass(name: str) -> np.ndarray:
        return np.concatenate([sessions[name].run(None, f)[0][:, 0] for f in feeds])

    passes = {f"ce-{p}": (lambda p=p: torch_pass(p)) for p in rankers}
    passes |= {name: (lambda n=name: onnx_pass(n)) for name in sessions}
    scores = {name: fn() for name, fn in passes.items()}  # warm-up, and the scores compared
    samples: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(args.repeats):
        for name, fn in passes.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    rate = {name: pairs / statistics.median(s) for name, s in samples.items()}
    best = max((f"ce-{p}" for p in rankers), key=rate.get)
    print(
        f"\n## micebench ce against ONNX Runtime {ort.__version__}: {checkpoint}, {pairs} TREC DL 2019 BM25 pairs "
        f"(mean {tokens:.0f} tokens, at most {args.max_length}), batch {args.batch}, {args.threads} thread(s), "
        f"median of {args.repeats} interleaved passes"
    )
    print(f"{'system':<15}{'pairs/s':>9}{'vs ce-fp32':>12}{'vs ort-int8':>14}{'max |score - ce-fp32|':>24}")
    rows = {}
    for name in passes:
        diff = float(np.abs(scores[name] - scores["ce-fp32"]).max())
        rows[name] = {
            "pairs_per_s": rate[name],
            "vs_ce_fp32": rate[name] / rate["ce-fp32"],
            "vs_ort_int8": rate[name] / rate["ort-int8"],
            "max_score_diff": diff,
            "p10_p90_s": [float(np.percentile(samples[name], q)) for q in (10, 90)],
        }
        print(
            f"{name:<15}{rate[name]:>9.1f}{rows[name]['vs_ce_fp32']:>11.2f}x{rows[name]['vs_ort_int8']:>13.2f}x"
            f"{diff:>24.2e}"
        )
    print(f"fastest micebench path: {best}, {rate[best] / rate['ort-int8']:.2f}x ONNX Runtime dynamic int8")
    return {
        "checkpoint": checkpoint,
        "pairs": pairs,
        "mean_tokens": tokens,
        "max_length": args.max_length,
        "onnxruntime": ort.__version__,
        "rows": rows,
        "fastest": best,
    }


def quality_paths(family: str) -> tuple[str, ...]:
    """The paths a family's quality is measured on: torch's three, and for `ce` its ONNX Runtime int8 backend
    when ONNX Runtime is installed (its fastest CPU path in part 2)."""
    import importlib.util

    onnx = family == "ce" and importlib.util.find_spec("onnxruntime") is not None
    return PATHS + (("onnx-int8",) if onnx else ())


def quality(args: argparse.Namespace, models: dict[str, tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Part 3: nDCG@10 of each path (and its largest score difference from fp32) with trained checkpoints."""
    from micebench import evaluate, load_dataset, load_ranker
    from micebench.firststage.candidates import first_stage
    from micebench.frames import candidates_frame, frame_to_run
    from micebench.report.significance import paired_difference

    results = []
    for name in args.quality_sets.split(","):
        dataset = load_dataset(name)
        frame = candidates_frame(dataset, first_stage(dataset, "auto", args.depth), with_text=True)
        qrels = dataset.qrels()
        if name == "scifact" and args.scifact_queries:
            keep = sorted(frame["qid"].unique())[: args.scifact_queries]
            frame = frame[frame["qid"].isin(keep)].reset_index(drop=True)
        qrels = {q: qrels[q] for q in frame["qid"].unique() if q in qrels}
        bm25_run = frame_to_run(frame)
        level = dataset.relevance_level
        base = evaluate(qrels, bm25_run, ["nDCG@10"], rel_level=level).means["nDCG@10"]
        print(
            f"\n## quality: {name}, BM25 top-{args.depth}, {len(qrels)} queries ({len(frame)} pairs); "
            f"BM25 nDCG@10 {base:.4f}"
        )
        print(
            f"{'ranker':<12}{'path':<10}{'nDCG@10':>9}{'vs fp32 (points)':>18}{'95% CI':>9}{'p':>6}"
            f"{'max |score diff|':>18}{'s':>7}"
        )
        for label, (family, checkpoint, extra) in models.items():
            fp32_scores, fp32_ndcg, fp32_per_query = None, None, None
            for path in quality_paths(family):
                if args.paths and path not in ("fp32", *args.paths.split(",")):
                    continue
                ranker = load_ranker(family, checkpoint=checkpoint, device="cpu", dtype=path, **extra)
                start = time.perf_counter()
                scores = ranker.score_candidates(frame)
                seconds = time.perf_counter() - start
                run = frame_to_run(frame.assign(score=scores))
                evaluation = evaluate(qrels, run, ["nDCG@10"], rel_level=level)
                ndcg, per_query = evaluation.means["nDCG@10"], evaluation.per_query["nDCG@10"]
                if fp32_scores is None:
                    fp32_scores, fp32_ndcg, fp32_per_query = scores, ndcg, per_query
                difference = paired_difference(per_query, fp32_per_query)
                diff = float(np.abs(scores - fp32_scores).max())
                print(
                    f"{label:<12}{path:<10}{ndcg:>9.4f}{100 * (ndcg - fp32_ndcg):>+18.2f}{difference.ci95:>9.2f}"
                    f"{difference.p:>6.2f}{diff:>18.2e}{seconds:>7.0f}"
                )
                results.append(
                    {
                        "dataset": name,
                        "ranker": label,
                        "checkpoint": checkpoint,
                        "path": path,
                        "ndcg@10": ndcg,
                        "points_vs_fp32": 100 * (ndcg - fp32_ndcg),
                        "ci95_points": difference.ci95,
                        "p_vs_fp32": difference.p,
                        "per_query": per_query,
                        "max_score_diff": diff,
                        "seconds": seconds,
                        "queries": len(qrels),
                        "pairs": len(frame),
                        "depth": args.depth,
                        "bm25_ndcg@10": base,
                    }
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="throughput,onnx,quality")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--doc-len", type=int, default=512, help="throughput part: document tokens")
    parser.add_argument("--pairs", type=int, default=256, help="onnx part: TREC DL 2019 BM25 pairs")
    parser.add_argument("--max-length", type=int, default=512, help="onnx part: token budget of a pair")
    parser.add_argument("--ce", default=None, help=f"cross-encoder checkpoint (default {TRAINED_CE} if present)")
    parser.add_argument("--mice", default=None, help=f"MICE checkpoint (default {TRAINED_MICE} if present)")
    parser.add_argument("--depth", type=int, default=20, help="quality part: BM25 candidates re-ranked")
    parser.add_argument("--scifact-queries", type=int, default=0, help="quality part: the first N (0: every judged)")
    parser.add_argument("--quality-sets", default="trec-dl-2019-passage,scifact")
    parser.add_argument("--paths", default=None, help="quality part: only these paths beside fp32 (e.g. onnx-int8)")
    parser.add_argument("--output", default="benchmarks/results")
    parser.add_argument("--no-dense", dest="dense", action="store_false", help="quality part: leave out the dense rows")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    ce = args.ce or (TRAINED_CE if Path(TRAINED_CE, "config.json").is_file() else "minilm-l6")
    mice = args.mice or (TRAINED_MICE if Path(TRAINED_MICE, "config.json").is_file() else None)
    parts = args.parts.split(",")
    from importlib.metadata import version

    report: dict[str, Any] = {
        "cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__, "torchao": version("torchao"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "args": vars(args),
    }  # fmt: skip
    print(f"# {report['cpu']}, {args.threads} thread(s), torch {torch.__version__}, torchao {report['torchao']}")
    started = time.perf_counter()
    if "throughput" in parts:
        report["throughput"] = throughput(args)
    if "onnx" in parts:
        report["onnx"] = against_onnx(args, ce)
    if "quality" in parts:
        # the packaged all-MiniLM-L6-v2 is a trained bi-encoder: `dense` always; the cross-encoder and MICE only
        # from trained checkpoints (a fresh head ranks at random)
        models = {"dense": ("dense", "minilm-l6", {"batch_size": args.batch})} if args.dense else {}
        if ce != "minilm-l6":
            models["ce"] = ("ce", ce, {"max_length": 256, "batch_size": args.batch})
        if mice:
            models["mice-l2+2"] = ("mice", mice, {"max_length": 256, "batch_size": args.batch})
        report["quality"] = quality(args, models)
    report["seconds"] = time.perf_counter() - started
    Path(args.output).mkdir(parents=True, exist_ok=True)
    path = Path(args.output) / f"precision-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['seconds']:.0f} s; written to {path}")


if __name__ == "__main__":
    main()
