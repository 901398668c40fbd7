"""Resolve `--first-stage` into a candidate run restricted to the judged queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from micebench.data.base import Dataset
from micebench.data.trec import Run, ranked, read_run
from micebench.errors import DataError, UnknownNameError, not_found

FIRST_STAGE_HELP = (
    "auto (the dataset's shipped bm25 run if it has scores, else bm25), bm25 (bm25s, k1=0.9 b=0.4), "
    "dataset:<name> (a run shipped with the dataset), full (every document), or a TREC run file path"
)


@dataclass
class Candidates:
    """First-stage output: {qid: {docno: score}} for judged queries, plus where it came from."""

    run: Run
    source: str
    is_bm25: bool
    full_corpus: bool = False
    #: drawn from this dataset's own corpus (its BM25 index, or every document), so no id needs checking against it
    from_corpus: bool = False
    #: every id of the corpus, when the first stage read them all (judged ids are checked without another pass)
    corpus_ids: frozenset[str] | None = None


def _top(run: Run, qids: set[str], k: int) -> Run:
    return {qid: dict(ranked(run.get(qid, {}))[:k]) for qid in sorted(qids)}


def _scored(run: Run) -> bool:
    """False for a run whose scores are all equal (ir_datasets gives 0 to every row of a `qid pid` file)."""
    first = None
    for docs in run.values():
        for score in docs.values():
            if first is None:
                first = score
            elif score != first:
                return True
    return False


def first_stage(dataset: Dataset, spec: str, top_k: int) -> Candidates:
    """Candidates for the judged queries of `dataset` according to `spec` (see FIRST_STAGE_HELP), completed as the
    collection's protocol says (`Dataset.rerank_set`)."""
    candidates = _first_stage(dataset, spec, top_k)
    if not candidates.full_corpus:
        candidates.run = dataset.rerank_set(candidates.run)
    return candidates


def _first_stage(dataset: Dataset, spec: str, top_k: int) -> Candidates:
    if top_k < 1:
        raise DataError(f"--top-k must be at least 1 (got {top_k})")
    judged = set(dataset.judged_queries())
    if not judged:
        raise DataError(f"dataset {dataset.name!r}: no judged query has a text in queries")
    if spec == "auto":
        spec = "dataset:bm25" if "bm25" in dataset.candidate_names() else "bm25"
        if spec == "dataset:bm25":
            shipped = dataset.candidates("bm25")
            if _scored(shipped):
                return Candidates(_top(shipped, judged, top_k), spec, is_bm25=True)
            spec = "bm25"  # a shipped run without scores (MS MARCO's top1000 files): its ranking is unknown
    if spec.startswith("dataset:"):
        name = spec.split(":", 1)[1]
        if name not in dataset.candidate_names():
            shipped = ", ".join(dataset.candidate_names()) or "none"
            raise UnknownNameError(f"dataset {dataset.name!r} ships no {name!r} run (shipped: {shipped})")
        return Candidates(_top(dataset.candidates(name), judged, top_k), spec, is_bm25=name == "bm25")
    if spec == "bm25":
        from micebench.firststage.bm25 import bm25_index_for

        queries = dataset.judged_queries()
        index = bm25_index_for(dataset)
        return Candidates(
            index.search(queries, top_k),
            "bm25s(k1=0.9,b=0.4,lucene,porter)",
            is_bm25=True,
            from_corpus=True,
            corpus_ids=frozenset(map(str, index.docnos)),
        )
    if spec == "full":
        docnos = [docno for docno, _ in dataset.iter_docs()]
        run = {qid: dict.fromkeys(docnos, 0.0) for qid in sorted(judged)}
        return Candidates(run, "full", is_bm25=False, full_corpus=True, from_corpus=True, corpus_ids=frozenset(docnos))
    path = Path(spec).expanduser()
    if path.is_file():
        run = read_run(path)
        if not judged & set(run):
            raise DataError(f"run file {spec}: none of its query ids matches a judged query of {dataset.name!r}")
        return Candidates(_top(run, judged, top_k), f"run:{path.resolve()}", is_bm25=False)
    if path.is_dir():
        raise DataError(f"first stage {spec!r} is a folder, not a TREC run file")
    if path.is_symlink() or "/" in spec or path.suffix in (".trec", ".run", ".txt", ".tsv", ".gz"):
        raise DataError(not_found("run file", spec))
    raise UnknownNameError(f"unknown first stage {spec!r}: expected {FIRST_STAGE_HELP}")
