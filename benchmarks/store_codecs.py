"""Compressed document stores side by side: size, nDCG@10, re-ranking speed and codebook cost of every codec.

For each dataset, the BM25 top-K candidates of (a subset of) its judged queries are encoded once by the model
(MICE `states`/`kv`, or ColBERT) and stored with every codec: fp16, int8, pq at several sizes (also with
`--token-means`, the token ids' mean vectors as side information), residual at 1 and 2 bits (the codebooks of
each trained on that store's own vectors; `--codebook-seeds 0,1,2` trains each once per seed and prints the mean
over seeds, since a codec's nDCG@10 moves with its codebooks). Each store then re-ranks the same frame end to
end (`Ranker.rerank`: the query's encoding, the gather with its decoding, the top layers or MaxSim), interleaved
with the fp16 store, and the script prints per codec and dataset: bytes per document and per token, nDCG@10 and
its difference from fp16 (with the 95% confidence interval of the mean per-query difference and a paired t-test's
p-value: at a few dozen queries a codec's difference carries a noise the goal must be read against), the
re-ranking speed relative to fp16 (median of the repeats), and the seconds spent
training the codebooks and encoding. Then the goals of issue 34 as ratios from this one run:

- MICE `states` at <= 48 bytes per token within 0.5 nDCG@10 of fp16 on every set, at >= 0.8x fp16's speed;
- ColBERT at <= 36 bytes per token within 0.3 nDCG@10 of fp16.

    python benchmarks/store_codecs.py --model mice --checkpoint checkpoints/mice-l2+2/best \
        --datasets scifact,trec-dl-19,cisi,medline-classic --top-k 20 --queries 100

The model encodes each document once per dataset (the codecs share its vectors through a cache), so the cost is
one encoding pass plus each codec's training and encoding. `--out` writes the rows as CSV (`codecs.csv`) for the
docs and `micebench report`'s storage figure (`micebench.report.plots.storage_pareto`).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from micebench import load_dataset, load_ranker
from micebench.data.trec import ranked
from micebench.evaluation import evaluate
from micebench.firststage.candidates import first_stage
from micebench.frames import candidates_frame, frame_to_run
from micebench.report.significance import paired_difference
from micebench.store.codecs import codec_spec
from micebench.store.manifest import read_manifest
from micebench.store.precompute import precompute

#: codec name -> (dtype, options)
CODECS: dict[str, tuple[str, dict[str, Any]]] = {
    "fp16": ("fp16", {}),
    "int8": ("int8", {}),
    "residual-1bit": ("residual", {"residual_bits": 1}),
    "residual-2bit": ("residual", {"residual_bits": 2}),
}


def pq(sizes: list[int], token_means: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
    """pq at each size in bytes per vector (with `token_means`: less each token id's mean vector, 2 more bytes)."""
    if token_means:
        return {f"pq{m}+tokens": ("pq", {"pq_bytes": m, "token_means": True}) for m in sizes}
    return {f"pq{m}": ("pq", {"pq_bytes": m}) for m in sizes}


class CachedEncoder:
    """The ranker, with `store_encode` remembered per batch of texts: every codec's store of a dataset is built from
    the same vectors, encoded once."""

    def __init__(self, ranker: Any):
        self.ranker, self.cache = ranker, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ranker, name)

    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        key = (mode, tuple(texts))
        if key not in self.cache:
            tensors, mask = self.ranker.store_encode(texts, mode)
            self.cache[key] = ({f: t.clone() for f, t in tensors.items()}, mask.clone())
        return self.cache[key]


def subset_run(dataset: Any, top_k: int, queries: int | None, folder: Path) -> tuple[Path, dict, dict]:
    """The BM25 top-K of the first `queries` judged queries (sorted ids), written as a run file; and its qrels."""
    candidates = first_stage(dataset, "auto", top_k)
    qrels = dataset.qrels()
    qids = sorted(q for q in candidates.run if q in qrels)[:queries]
    run = {q: candidates.run[q] for q in qids}
    path = folder / f"{dataset.name.replace('/', '_')}-bm25-top{top_k}.trec"
    lines = [f"{q} Q0 {d} {r + 1} {score} bm25" for q in qids for r, (d, score) in enumerate(ranked(run[q]))]
    path.write_text("\n".join(lines) + "\n")
    return path, run, {q: qrels[q] for q in qids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mice", help="mice (or mice-l<k>+<m>) or colbert")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--mode", default=None, help="MICE: states (default) or kv")
    parser.add_argument("--datasets", default="scifact,trec-dl-19,cisi,medline-classic")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--queries", type=int, default=None, help="the first N judged queries of each set")
    parser.add_argument("--pq-sizes", default=None, help="pq bytes per token vector (default: d/16, d/8, d/4)")
    parser.add_argument(
        "--token-pq-sizes",
        default=None,
        help="pq sizes with --token-means (default: d/24, d/12, d/8, each the nearest divisor of d below)",
    )
    parser.add_argument("--codecs", default=None, help="only these (comma-separated labels; fp16 always runs)")
    parser.add_argument("--train-docs", type=int, default=256, help="documents whose vectors train the codebooks")
    parser.add_argument(
        "--codebook-seeds", default="0", help="train each pq/residual codec once per seed (comma-separated)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed re-rankings per store (interleaved with fp16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--out", default=None, help="folder for codecs.csv")
    args = parser.parse_args()

    ranker = load_ranker(args.model, checkpoint=args.checkpoint, device=args.device, **_untrained(args.model))
    mode = args.mode or type(ranker).store_modes[0]
    fields, _ = ranker.store_fields(mode)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="micebench-codecs-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    print(
        f"{ranker.label} {mode}, BM25 top-{args.top_k}, {args.queries or 'all'} queries per set, device={args.device}, "
        f"threads={torch.get_num_threads()}, torch {torch.__version__}; work dir {work}"
    )
    for name in args.datasets.split(","):
        dataset = load_dataset(name)
        run_file, run, qrels = subset_run(dataset, args.top_k, args.queries, work)
        frame = candidates_frame(dataset, first_stage(dataset, str(run_file), args.top_k), with_text=False)
        encoder = CachedEncoder(ranker)
        stores: dict[str, Path] = {}
        for label, (family, dtype, options) in _seeded(_codecs(args, ranker, mode), args.codebook_seeds).items():
            spec = codec_spec(dtype, **options, train_docs=args.train_docs if dtype in ("pq", "residual") else None)
            folder = work / f"{dataset.name.replace('/', '_')}-{label}"
            start = time.perf_counter()
            precompute(
                encoder, dataset, folder, mode, dtype, overwrite=True, first_stage=str(run_file), top_k=args.top_k,
                codec=spec,
            )  # fmt: skip
            stores[label] = folder
            row = {"dataset": dataset.name, "codec": label, "family": family, "build_s": time.perf_counter() - start}
            rows.append(row)
        encoder.cache.clear()
        timings: dict[str, list[float]] = {label: [] for label in stores}
        scores: dict[str, float] = {}
        per_query: dict[str, dict[str, float]] = {}
        rankings: dict[str, Any] = {}
        for repeat in range(args.repeats):
            for label in stores:  # fp16 first in every round: each codec is timed beside it
                ranker.open_store(str(stores[label]))
                start = time.perf_counter()
                out = ranker.rerank(frame)
                timings[label].append(time.perf_counter() - start)
                if repeat == 0:
                    rankings[label] = out
                    result = frame_to_run(out)
                    level = dataset.relevance_level
                    evaluation = evaluate(qrels, result, ["nDCG@10"], level)
                    scores[label] = 100 * evaluation.means["nDCG@10"]
                    per_query[label] = evaluation.per_query["nDCG@10"]
        errors = reconstruction_errors(stores, ranker, mode)
        for row in rows:
            if row["dataset"] != dataset.name or "ndcg" in row:
                continue
            overlap, spearman = agreement(rankings[row["codec"]], rankings["fp16"])
            manifest = read_manifest(stores[row["codec"]])
            codec = manifest.get("codec", {})
            difference = paired_difference(per_query[row["codec"]], per_query["fp16"])
            row |= {
                "docs": manifest["num_docs"],
                "tokens_per_doc": manifest["num_tokens"] / manifest["num_docs"],
                "bytes_per_doc": manifest["bytes_per_doc"],
                "bytes_per_token": manifest["bytes"] / manifest["num_tokens"],
                "codebook_bytes": codec.get("bytes", 0),
                "ndcg": scores[row["codec"]],
                "delta": scores[row["codec"]] - scores["fp16"],
                "ci95": difference.ci95,
                "p": difference.p,
                "top10_overlap": overlap,
                "spearman": spearman,
                "rel_error": errors[row["codec"]],
                "seconds": statistics.median(timings[row["codec"]]),
                "speed_vs_fp16": statistics.median(timings["fp16"]) / statistics.median(timings[row["codec"]]),
                "train_s": codec.get("training", {}).get("seconds", 0.0),
                "encode_s": codec.get("encode_seconds", 0.0),
                "pairs": len(frame),
            }
        ranker.open_store(None)
        _print(dataset.name, [r for r in rows if r["dataset"] == dataset.name])
    _goals(rows, args.model, mode)
    _over_seeds(rows)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "codecs.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        from micebench.report.plots import storage_figure

        means = {}
        for row in rows:
            means.setdefault(row["codec"], []).append(row)
        points = [
            (codec, statistics.mean(r["bytes_per_doc"] for r in mine), statistics.mean(r["ndcg"] for r in mine))
            for codec, mine in means.items()
        ]
        sets = len({r["dataset"] for r in rows})
        figure = storage_figure(points, f"mean nDCG@10 (x100) over {sets} datasets", out)
        print(f"rows written to {out / 'codecs.csv'}; figure {figure[0] if figure else '(none)'}")


def agreement(ranked: Any, reference: Any) -> tuple[float, float]:
    """How closely a store's ranking follows the fp16 store's: the mean share of each query's top 10 they share,
    and the mean Spearman correlation of their scores per query."""
    overlaps, correlations = [], []
    for qid, group in reference.groupby("qid"):
        mine = ranked[ranked["qid"] == qid]
        top = set(group.nsmallest(10, "rank")["docno"])
        overlaps.append(len(top & set(mine.nsmallest(10, "rank")["docno"])) / max(len(top), 1))
        both = group.set_index("docno")["score"].to_frame("a").join(mine.set_index("docno")["score"].rename("b"))
        if len(both) > 2 and both["a"].nunique() > 1 and both["b"].nunique() > 1:
            correlations.append(float(both["a"].rank().corr(both["b"].rank())))
    return statistics.mean(overlaps), statistics.mean(correlations) if correlations else float("nan")


def reconstruction_errors(stores: dict[str, Path], ranker: Any, mode: str, sample: int = 64) -> dict[str, float]:
    """Mean relative L2 error of each store's token vectors against the fp16 store's, over `sample` documents."""
    from micebench.store.reader import DocumentStore

    def open_store(folder: Path) -> DocumentStore:
        return DocumentStore(folder, ranker.store_kind, ranker.store_fingerprint(mode), mode, dtype=torch.float32)

    reference = open_store(stores["fp16"])
    docnos = reference.docnos[:sample]
    want, mask = reference.gather(reference.positions(docnos))
    want, keep = {f: t.clone() for f, t in want.items()}, mask.bool()
    errors = {}
    for label, folder in stores.items():
        store = open_store(folder)
        got, _ = store.gather(store.positions(docnos))
        per_field = [
            float(((got[f][keep] - want[f][keep]).norm(dim=-1) / want[f][keep].norm(dim=-1).clamp_min(1e-12)).mean())
            for f in want
        ]
        errors[label] = statistics.mean(per_field)
    return errors


def _untrained(model: str) -> dict[str, Any]:
    return {"untrained": True} if model.startswith("mice") else {}


def _codecs(args: argparse.Namespace, ranker: Any, mode: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """fp16 first (the reference), int8, the pq sizes, the residual codecs."""
    dim = _field_dim(ranker, mode)
    if args.pq_sizes:
        sizes = [int(s) for s in args.pq_sizes.split(",")]
    else:
        sizes = [dim // 16, dim // 8, dim // 4]
    if args.token_pq_sizes:
        token_sizes = [int(s) for s in args.token_pq_sizes.split(",")]
    else:
        token_sizes = [next(m for m in range(max(dim // parts, 1), 0, -1) if dim % m == 0) for parts in (24, 12, 8)]
    table = dict(CODECS)
    every = {"fp16": table.pop("fp16"), "int8": table.pop("int8"), **pq(sizes), **pq(token_sizes, True), **table}
    wanted = set(args.codecs.split(",")) | {"fp16"} if args.codecs else set(every)
    return {label: codec for label, codec in every.items() if label in wanted}


def _seeded(codecs: dict[str, tuple[str, dict[str, Any]]], seeds: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Each trained codec once per codebook seed, as label -> (the codec's own label, dtype, options): `label` for
    the first seed, `label@s<seed>` for the others."""
    out = {}
    first, *others = [int(s) for s in seeds.split(",")]
    for label, (dtype, options) in codecs.items():
        if dtype not in ("pq", "residual"):
            out[label] = (label, dtype, options)
            continue
        out[label] = (label, dtype, {**options, "seed": first})
        out |= {f"{label}@s{seed}": (label, dtype, {**options, "seed": seed}) for seed in others}
    return out


def _over_seeds(rows: list[dict[str, Any]]) -> None:
    """Per codec and set, the difference from fp16 averaged over its codebook seeds, with its range."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["dataset"]), []).append(r["delta"])
    if all(len(v) == 1 for v in groups.values()):
        return
    print("\nnDCG@10 vs fp16, mean over codebook seeds [lowest, highest]:")
    for codec in dict.fromkeys(c for c, _ in groups):
        cells = [
            f"{d} {statistics.mean(v):+.2f} [{min(v):+.2f}, {max(v):+.2f}]"
            for (c, d), v in groups.items()
            if c == codec and c != "fp16"
        ]
        if cells:
            print(f"  {codec:<22} " + "; ".join(cells))


def _field_dim(ranker: Any, mode: str) -> int:
    tensors, _ = ranker.store_encode(["a short document"], mode)
    fields, _ = ranker.store_fields(mode)
    return int(tensors[fields[0]].shape[-1])


def _print(name: str, rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{name}: {rows[0]['docs']} documents, {rows[0]['tokens_per_doc']:.1f} tokens each, {rows[0]['pairs']} pairs"
    )
    print(
        f"{'codec':<15} {'B/doc':>9} {'B/token':>8} {'rel.err':>7} {'nDCG@10':>8} {'vs fp16':>8} {'95% CI':>7} "
        f"{'p':>5} {'top10':>6} "
        f"{'rho':>5} {'rerank s':>9} {'speed':>6} {'train s':>8} {'encode s':>9}"
    )
    for r in rows:
        print(
            f"{r['codec']:<15} {r['bytes_per_doc']:9,.0f} {r['bytes_per_token']:8.1f} {r['rel_error']:7.3f} "
            f"{r['ndcg']:8.2f} {r['delta']:+8.2f} {'+-' + format(r['ci95'], '.2f'):>7} {r['p']:5.2f} "
            f"{r['top10_overlap']:6.2f} {r['spearman']:5.2f} {r['seconds']:9.2f} "
            f"{r['speed_vs_fp16']:5.2f}x {r['train_s']:8.1f} {r['encode_s']:9.2f}"
        )


def _goals(rows: list[dict[str, Any]], model: str, mode: str) -> None:
    """The issue's goals, as ratios over every set of this run."""
    colbert = model.startswith("colbert")
    budget, tolerance = (36, 0.3) if colbert else (48, 0.5)
    print(f"\ngoals ({'ColBERT' if colbert else 'MICE ' + mode}: <= {budget} B/token, within {tolerance} nDCG@10"
          f"{'' if colbert else ', >= 0.8x fp16 speed'}):")  # fmt: skip
    sets = sorted({r["dataset"] for r in rows})
    for codec in dict.fromkeys(r["codec"] for r in rows):
        mine = [r for r in rows if r["codec"] == codec]
        fp16 = {r["dataset"]: r for r in rows if r["codec"] == "fp16"}
        per_token = max(r["bytes_per_token"] for r in mine)
        ratio = statistics.mean(fp16[r["dataset"]]["bytes_per_doc"] / r["bytes_per_doc"] for r in mine)
        worst = min(r["delta"] for r in mine)
        speed = min(r["speed_vs_fp16"] for r in mine)
        if codec == "fp16":
            continue
        met = per_token <= budget and worst >= -tolerance and (colbert or speed >= 0.8)
        overlap = min(r["top10_overlap"] for r in mine)
        below = [r["dataset"] for r in mine if r["delta"] < 0 and r["p"] < 0.05]
        print(
            f"  {codec:<15} {per_token:6.1f} B/token ({ratio:5.1f}x smaller than fp16), worst nDCG@10 vs fp16 "
            f"{worst:+.2f} over {len(sets)} sets (lowest top-10 overlap {overlap:.2f}), slowest speed vs fp16 "
            f"{speed:.2f}x: {'meets' if met else 'misses'} the goal; significantly below fp16 (paired t, p < 0.05) "
            f"on {', '.join(below) if below else 'no set'}"
        )


if __name__ == "__main__":
    main()
