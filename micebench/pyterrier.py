"""Any micebench ranker as a PyTerrier transformer, and micebench's collections and first stages as PyTerrier
frames (PyTerrier 1.x needs no Java for any of this). Install with `pip install 'micebench[pyterrier]'`.

```python
import pyterrier as pt
from micebench.pyterrier import Reranker, first_stage, topics_and_qrels
topics, qrels = topics_and_qrels("scifact")
bm25 = first_stage("scifact")  # micebench's BM25 top-100 with texts
pt.Experiment([bm25, bm25 >> Reranker("ce")], topics, qrels, [pt.measures.nDCG @ 10], baseline=0, correction="holm")
```
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from micebench.errors import MicebenchError
from micebench.rankers.base import Ranker, load_ranker

try:
    import pyterrier as pt
except ImportError as error:  # pragma: no cover - the message says how to get it
    raise ImportError("micebench.pyterrier needs PyTerrier: pip install 'micebench[pyterrier]'") from error


class Reranker(pt.Transformer):
    """Scores each row of a PyTerrier result frame (`qid`, `query`, `docno`, `text`) with a micebench ranker and
    returns it with `score` and `rank` (PyTerrier's 0-based ranks). MICE and ColBERT given `precomputed=STORE`
    score from the store by `docno` and need no `text` column."""

    def __init__(self, model: str | Ranker, **options: Any):
        self.ranker = model if isinstance(model, Ranker) else load_ranker(model, **options)
        if isinstance(model, Ranker) and options:
            raise MicebenchError("options apply to a model name; a ranker object comes with its own")

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Score the frame's rows (the ranker's `score_candidates`, as `micebench run` does) and rank them."""
        reads_text = self.ranker.reads_text(dataclasses.asdict(self.ranker.options))
        needed = ["qid", "query", "docno"] + (["text"] if reads_text else [])
        missing = [c for c in needed if c not in inp.columns]
        if missing:
            raise MicebenchError(f"{self.ranker.name}: the input frame lacks column(s) {', '.join(missing)}")
        if inp.empty:
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        frame = inp.reset_index(drop=True).copy()
        frame["qid"], frame["docno"] = frame["qid"].astype(str), frame["docno"].astype(str)
        if "text" not in frame.columns:
            frame["text"] = ""
        frame["score"] = self.ranker.score_candidates(frame)
        return pt.model.add_ranks(frame)

    def __repr__(self) -> str:
        return f"micebench.Reranker({self.ranker.name!r})"


def topics_and_qrels(
    dataset: str, data_dir: str | None = None, split: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A micebench collection's judged queries (`qid`, `query`) and judgements (`qid`, `docno`, `label`)."""
    from micebench.data import load_dataset

    ds = load_dataset(dataset, data_dir, split)
    topics = pd.DataFrame(sorted(ds.judged_queries().items()), columns=["qid", "query"])
    rows = [(q, d, grade) for q, docs in ds.qrels().items() for d, grade in docs.items()]
    return topics, pd.DataFrame(rows, columns=["qid", "docno", "label"])


def first_stage(
    dataset: str,
    spec: str = "auto",
    top_k: int = 100,
    text: bool = True,
    data_dir: str | None = None,
    split: str | None = None,
) -> pt.Transformer:
    """micebench's first stage (`--first-stage`, `--top-k`) as a transformer from topics to candidates: the same
    candidates, in the same order and with the same scores, that `micebench run` re-ranks; texts when `text`."""
    from micebench.data import load_dataset
    from micebench.firststage.candidates import first_stage as candidates_of
    from micebench.frames import candidates_frame

    ds = load_dataset(dataset, data_dir, split)
    frame = candidates_frame(ds, candidates_of(ds, spec, top_k), with_text=text)
    if not text:
        frame = frame.drop(columns=["text"])
    return pt.Transformer.from_df(pt.model.add_ranks(frame), uniform=False)
