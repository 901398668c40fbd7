"""Candidate frames: the PyTerrier-style table (qid, query, docno, text, score) rankers consume, and back to runs.

Used by `run`, by the trainer's validator and by the benchmarks, so it lives apart from the pipeline.
"""

from __future__ import annotations

import logging
from itertools import chain

import numpy as np
import pandas as pd

from micebench.data import Dataset
from micebench.data.trec import Run
from micebench.errors import DataError
from micebench.firststage.candidates import Candidates

log = logging.getLogger("micebench")


def check_queries(queries: dict[str, str]) -> None:
    """Refuse empty query texts, naming them."""
    empty = sorted(qid for qid, text in queries.items() if not text.strip())
    if empty:
        raise DataError(f"{len(empty)} judged queries have empty text (e.g. query id {empty[0]!r})")


def candidates_frame(dataset: Dataset, candidates: Candidates, with_text: bool) -> pd.DataFrame:
    """The frame (qid, query, docno, text, score) for the candidates; texts only when `with_text`."""
    queries = dataset.judged_queries()
    texts = candidate_texts(dataset, candidates.run) if with_text else {}
    frame = pairs_frame(candidates.run)
    frame.insert(1, "query", frame["qid"].map(queries))
    frame.insert(3, "text", frame["docno"].map(texts) if with_text else "")
    return frame


def candidate_texts(dataset: Dataset, run: Run) -> dict[str, str]:
    """Texts of every candidate and judged document; refuses candidates absent from the corpus."""
    docnos = set().union(*run.values())
    qrels_docs = set().union(*dataset.qrels().values())
    texts = dataset.doc_texts(docnos | qrels_docs)
    refuse_absent_candidates(dataset, sorted(docnos - texts.keys()))
    warn_absent_judged(dataset, len(qrels_docs - texts.keys()))
    empty = sum(1 for d in docnos if not texts[d].strip())
    if empty:
        log.warning("%d candidate documents have empty text", empty)
    return texts


def warn_absent_judged(dataset: Dataset, count: int) -> None:
    """The README's warning, with their count, for judged documents that the corpus lacks (TREC DL has some)."""
    if count:
        log.warning("%d judged documents of %s are absent from the corpus", count, dataset.name)


def refuse_absent_candidates(dataset: Dataset, absent: list[str]) -> None:
    """One line naming how many candidates (and the first of them) the dataset's corpus lacks, if any."""
    if absent:
        raise DataError(
            f"{len(absent)} candidate documents are not in the corpus of {dataset.name!r} "
            f"(e.g. {absent[0]!r}): the first stage does not match this collection"
        )


def pairs_frame(run: Run) -> pd.DataFrame:
    """(qid, docno, score) rows of a run: queries in id order, each query's documents in the run's order."""
    qids = sorted(run)
    lengths = [len(run[qid]) for qid in qids]
    count = sum(lengths)
    if not count:
        raise DataError("the first stage returned no candidates for any judged query")
    docnos = np.empty(count, dtype=object)
    docnos[:] = list(chain.from_iterable(run[qid] for qid in qids))
    return pd.DataFrame(
        {
            "qid": pd.Series(np.repeat(np.array(qids, dtype=object), lengths), dtype=object),
            "docno": pd.Series(docnos, dtype=object),
            "score": np.fromiter(chain.from_iterable(run[qid].values() for qid in qids), np.float64, count),
        }
    )


def frame_to_run(frame: pd.DataFrame, top_k: int | None = None) -> Run:
    """{qid: {docno: score}} keeping the best `top_k` per query (frame is rank-sorted)."""
    if top_k is not None:
        frame = frame[frame["rank"] <= top_k]
    run: Run = {}
    for qid, docno, score in zip(frame["qid"], frame["docno"], frame["score"], strict=True):
        run.setdefault(qid, {})[docno] = float(score)
    return run
