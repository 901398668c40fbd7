"""Candidate frames: the PyTerrier-style table (qid, query, docno, text, score) rankers consume, and back to runs.

Used by `run`, by the trainer's validator and by the benchmarks, so it lives apart from the pipeline.
"""

from __future__ import annotations

import logging

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
    docnos = {d for docs in candidates.run.values() for d in docs}
    qrels_docs = {d for docs in dataset.qrels().values() for d in docs}
    texts = dataset.doc_texts(docnos | qrels_docs) if with_text else {}
    if with_text:
        missing = sorted(docnos - texts.keys())
        if missing:
            raise DataError(
                f"{len(missing)} candidate documents are not in the corpus of {dataset.name!r} "
                f"(e.g. {missing[0]!r}): the first stage does not match this collection"
            )
        unjudged_text = len(qrels_docs - texts.keys())
        if unjudged_text:
            log.warning("%d judged documents of %s are absent from the corpus", unjudged_text, dataset.name)
        empty = sum(1 for d in docnos if not texts[d].strip())
        if empty:
            log.warning("%d candidate documents have empty text", empty)
    rows = [(qid, docno, score) for qid in sorted(candidates.run) for docno, score in candidates.run[qid].items()]
    if not rows:
        raise DataError("the first stage returned no candidates for any judged query")
    frame = pd.DataFrame(rows, columns=["qid", "docno", "score"], dtype=object)
    frame["score"] = frame["score"].astype(np.float64)
    frame["query"] = frame["qid"].map(queries)
    frame["text"] = frame["docno"].map(texts) if with_text else ""
    return frame[["qid", "query", "docno", "text", "score"]]


def frame_to_run(frame: pd.DataFrame, top_k: int | None = None) -> Run:
    """{qid: {docno: score}} keeping the best `top_k` per query (frame is rank-sorted)."""
    if top_k is not None:
        frame = frame[frame["rank"] <= top_k]
    run: Run = {}
    for qid, docno, score in zip(frame["qid"], frame["docno"], frame["score"], strict=True):
        run.setdefault(qid, {})[docno] = float(score)
    return run
