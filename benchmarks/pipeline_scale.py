"""Paper-scale runs without a model: `python benchmarks/pipeline_scale.py` (or `make bench-scale`).

Generates a synthetic collection shaped like MS MARCO passage dev (BEIR layout, written under a temporary folder
that is deleted at the end): 1M documents of 40-70 words from a Zipf-distributed vocabulary in a gzip corpus,
7,000 queries, a TREC run `candidates/bm25.trec` with the top 1000 candidates of each query (BM25-like scores rounded
to 4 decimals, so ties occur), and qrels with about one relevant document per query (the run finds it
for about 85% of the queries). Everything is drawn from one seed, so the files are identical from run to run.

Then it times, each in a fresh process so that its peak RSS (getrusage of that child) is its own:

- `micebench run --model first-stage` over the 7M candidate pairs: the whole command, no texts read;
- the same command with `--model scale-text-length`, a ranker defined in this file that reads every candidate's
  text (the corpus pass and the text column of the frame) and scores it by its length in characters, so that
  the text-reading path is timed end to end with negligible scoring work.

Per stage (wall seconds, and the process's peak RSS in GB so far): checking inputs (dataset, qrels, queries),
reading candidates (`first_stage`: the run file and the top-k cut), building the frame (`candidates_frame`, with
the corpus pass when texts are read), candidate ids checked against the corpus (`check_ids_in_corpus`: a
pass over the corpus's ids for rankers that read no text), scoring (the chunked re-ranking with its durable
progress records, or the whole frame at once for rankers that record none: `first-stage`), merging the progress
records into the run, the informative-scores check, evaluation (ranx) and writing the result
folder. `total` is the child's wall time from start to exit (imports, model loading, manifest and exit included),
`CPU time` its user+system seconds (on a busy machine the two differ). The numba cache (NUMBA_CACHE_DIR) is warmed
by a small evaluation before the timed runs. `--collection DIR` times an existing BEIR-layout folder instead
(left in place); `--json FILE` keeps the measurements.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: functions of micebench.pipeline timed as stages, by label (those a version of the pipeline lacks are left out)
STAGES = {
    "check_inputs": "checking inputs",
    "first_stage": "reading candidates",
    "candidates_frame": "building the frame",
    "absent_from_corpus": "candidate ids checked",
    "check_ids_in_corpus": "candidate ids checked",
    "score_in_chunks": "scoring",
    "score_at_once": "scoring",
    "finished_run": "merging scores",
    "check_informative": "informative check",
    "evaluate": "evaluation",
    "write_result": "writing",
}
TEXT_MODEL = "scale-text-length"


# -- synthetic collection --------------------------------------------------------------------------------------


def vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    """`size` distinct lowercase pseudo-words of 2-4 syllables."""
    syllables = np.array([c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")])
    words: dict[str, None] = {}
    while len(words) < size:
        count = rng.integers(2, 5)
        words.setdefault("".join(rng.choice(syllables, count)), None)
    return np.array(list(words), dtype=object)


def zipf_probabilities(size: int, exponent: float = 1.07) -> np.ndarray:
    """Word probabilities following Zipf's law, most frequent first."""
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return weights / weights.sum()


def write_corpus(path: Path, rng: np.random.Generator, docs: int, words: np.ndarray, chunk: int = 50_000) -> None:
    """`docs` documents of 40-70 words as BEIR JSONL, gzip-compressed with a fixed header (deterministic bytes)."""
    probabilities = zipf_probabilities(len(words))
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as out:
        for start in range(0, docs, chunk):
            count = min(chunk, docs - start)
            lengths = rng.integers(40, 71, count)
            drawn = words[rng.choice(len(words), int(lengths.sum()), p=probabilities)].tolist()
            ends = np.cumsum(lengths).tolist()
            lines, begin = [], 0
            for offset, end in enumerate(ends):
                text = " ".join(drawn[begin:end])
                lines.append(f'{{"_id": "{start + offset}", "title": "", "text": "{text}"}}\n')
                begin = end
            out.write("".join(lines).encode("utf-8"))


def candidate_docs(rng: np.random.Generator, docs: int, depth: int) -> np.ndarray:
    """`depth` distinct document numbers drawn uniformly."""
    drawn = np.unique(rng.integers(0, docs, depth + depth // 8 + 16))
    while len(drawn) < depth:  # pragma: no cover - practically never for depth << docs
        drawn = np.unique(np.concatenate([drawn, rng.integers(0, docs, depth)]))
    return rng.permutation(drawn)[:depth]


def bm25_like_scores(rng: np.random.Generator, depth: int) -> np.ndarray:
    """Descending scores in the range of BM25 on MS MARCO, rounded to 4 decimals (so that some tie)."""
    top = rng.uniform(14.0, 30.0)
    gaps = rng.exponential(1.0, depth)
    scores = top - np.cumsum(gaps) / gaps.sum() * top * rng.uniform(0.3, 0.6)
    return np.round(scores, 4)


def write_collection(folder: Path, docs: int, queries: int, depth: int, seed: int) -> dict[str, Any]:
    """Write a BEIR-layout folder (corpus.jsonl.gz, queries.jsonl, qrels/test.tsv, candidates/bm25.trec)."""
    rng = np.random.default_rng(seed)
    (folder / "qrels").mkdir(parents=True)
    (folder / "candidates").mkdir()
    words = vocabulary(rng, 30_000)
    write_corpus(folder / "corpus.jsonl.gz", rng, docs, words)
    qids = [str(q) for q in rng.choice(1_100_000, queries, replace=False)]
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for qid in qids:
            text = " ".join(words[rng.integers(0, 5_000, rng.integers(3, 10))])
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    relevant: dict[str, list[str]] = {}
    with open(folder / "candidates" / "bm25.trec", "w", encoding="utf-8") as out:
        for qid in qids:
            found = candidate_docs(rng, docs, depth).tolist()
            scores = bm25_like_scores(rng, depth).tolist()
            ranked = enumerate(zip(found, scores, strict=True), 1)
            out.write("".join(f"{qid} Q0 {d} {r} {s:.6f} bm25\n" for r, (d, s) in ranked))
            if rng.random() > 0.85:  # a relevant document the first stage missed
                judged = int(rng.integers(0, docs))
            else:
                judged = found[min(int(rng.geometric(0.08)), depth) - 1]
            relevant[qid] = [str(judged)] + ([str(int(rng.integers(0, docs)))] if rng.random() < 0.07 else [])
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        out.writelines(f"{qid}\t{d}\t1\n" for qid, judged in relevant.items() for d in dict.fromkeys(judged))
    return {"docs": docs, "queries": queries, "depth": depth, "seed": seed}


# -- timed child processes -------------------------------------------------------------------------------------


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(name: str, function: Callable[..., Any], record: dict[str, Any]) -> Callable[..., Any]:
    """`function` wrapped so that each call adds its wall time and the peak RSS after it to `record[name]`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            entry = record.setdefault(name, {"s": 0.0})
            entry["s"] += time.perf_counter() - started
            entry["peak_rss_gb"] = peak_rss_gb()

    return wrapper


def register_text_ranker() -> None:
    """Register `scale-text-length`: reads every candidate's text and scores it by its length."""
    import pandas as pd

    from micebench.rankers.base import Ranker, register_ranker

    @register_ranker(TEXT_MODEL, "benchmark only: score = length of the document text")
    class TextLengthRanker(Ranker):
        """Score = number of characters of the candidate's text (reads texts, costs no model)."""

        name = TEXT_MODEL

        def score(self, query: str, docs: list[str]) -> np.ndarray:
            return np.array([len(d) for d in docs], dtype=np.float64)

        def score_candidates(self, candidates: pd.DataFrame) -> np.ndarray:
            return candidates["text"].str.len().to_numpy(dtype=np.float64)


def child(model: str, dataset: str, output: str, report: str) -> None:
    """Run `micebench run` on `dataset` in this process with every stage timed; write the timings to `report`."""
    import micebench.pipeline as pipeline
    from micebench.cli import main

    record: dict[str, Any] = {}
    for name in STAGES:
        if hasattr(pipeline, name):
            setattr(pipeline, name, timed(STAGES[name], getattr(pipeline, name), record))
    if model == TEXT_MODEL:
        register_text_ranker()
    argv = ["run", "--model", model, "--dataset", dataset, "--top-k", "1000", "--output", output, "--overwrite"]
    try:
        main(argv)
    except SystemExit as stop:
        if stop.code:
            raise
    Path(report).write_text(json.dumps(record))


def run_child(model: str, dataset: Path, output: Path) -> dict[str, Any]:
    """Time one `micebench run` in a fresh process: per-stage record, wall time and the child's peak RSS."""
    report = output / f"{model}.timings.json"
    command = [sys.executable, __file__, "--child", model, "--dataset", str(dataset), "--output", str(output)]
    started = time.perf_counter()
    process = subprocess.Popen([*command, "--report", str(report)], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{model} run failed (exit status {process.returncode})")
    stages = json.loads(report.read_text())
    cpu = usage.ru_utime + usage.ru_stime
    return {"stages": stages, "total_s": wall, "cpu_s": cpu, "peak_rss_gb": usage.ru_maxrss / 1024**2}


def warm_numba_cache() -> None:
    """Compile (or load from NUMBA_CACHE_DIR) ranx's kernels once, so no timed run pays for compilation."""
    from micebench.evaluation import evaluate

    evaluate({"q": {"d": 1}}, {"q": {"d": 1.0, "e": 0.5}})


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """Seconds per stage and peak RSS of each timed run."""
    models = list(results)
    print(f"{'stage':<22}" + "".join(f"{m:>22}" for m in models))
    for label in dict.fromkeys(STAGES.values()):  # functions of different versions may share a stage
        cells = [results[m]["stages"].get(label) for m in models]
        print(
            f"{label:<22}"
            + "".join(f"{c['s']:>9.1f} s {c['peak_rss_gb']:>5.2f} GB" if c else f"{'-':>22}" for c in cells)
        )
    print(f"{'total (process)':<22}" + "".join(f"{results[m]['total_s']:>9.1f} s {'':>8}" for m in models))
    print(f"{'CPU time (process)':<22}" + "".join(f"{results[m].get('cpu_s', 0):>9.1f} s {'':>8}" for m in models))
    print(f"{'peak RSS':<22}" + "".join(f"{results[m]['peak_rss_gb']:>17.2f} GB" for m in models))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=7_000)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="parent of the temporary folder (default: the system's)")
    parser.add_argument("--collection", default=None, help="time this BEIR-layout folder instead of generating one")
    parser.add_argument("--keep", action="store_true", help="keep the generated collection and results")
    parser.add_argument("--no-text", action="store_true", help="skip the run that reads candidate texts")
    parser.add_argument("--json", default=None, help="also write the measurements to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dataset, args.output, args.report)
        return

    root = Path(tempfile.mkdtemp(prefix="micebench-scale-", dir=args.workdir))
    try:
        if args.collection:
            collection, facts = Path(args.collection).resolve(), {"collection": args.collection}
        else:
            started = time.perf_counter()
            collection = root / "msmarco-synthetic"
            facts = write_collection(collection, args.docs, args.queries, args.depth, args.seed)
            size = sum(p.stat().st_size for p in collection.rglob("*") if p.is_file())
            print(f"generated {facts} in {time.perf_counter() - started:.0f} s ({size / 1e9:.2f} GB) under {root}")
        warm_numba_cache()
        models = ["first-stage"] + ([] if args.no_text else [TEXT_MODEL])
        results = {m: run_child(m, collection, root / "results") for m in models}
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps({"collection": facts, "runs": results}, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
