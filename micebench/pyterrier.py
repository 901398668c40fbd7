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
    from pyterrier.transformer import SourceTransformer
except ImportError as error:  # pragma: no cover - the message says how to get it
    raise ImportError("micebench.pyterrier needs PyTerrier: pip install 'micebench[pyterrier]'") from error


class Reranker(pt.Transformer):
    """Scores each row of a PyTerrier result frame (`qid`, `query`, `docno`, `text`) with a micebench ranker and
    returns it with `score` and `rank` (PyTerrier's 0-based ranks). MICE and ColBERT given `precomputed=STORE`
    score from the store by `docno` and need no `text` column.

    A ranker that `micebench run` would refuse (an untrained MICE, a cross-encoder checkpoint without a trained
    score head) is refused unless `untrained=True`. Every frame is checked first, each problem one line naming its
    row: a missing value (NaN) in a column it reads, one qid with two query texts, one docno twice under a qid with
    different texts. With a store, the frame must come from the store's collection: `dataset=NAME` (or a
    `first_stage(NAME)` composed with `>>`) is checked against the store's corpus at once, and a frame's texts are
    compared with those of the store's collection where it can be opened."""

    def __init__(self, model: str | Ranker, dataset: str | None = None, **options: Any):
        if isinstance(model, Ranker) and options:
            raise MicebenchError("options apply to a model name; a ranker object comes with its own")
        self.ranker = model if isinstance(model, Ranker) else load_ranker(model, **options)
        self.ranker.check_ready_for_effectiveness()
        self._store_texts: list[Any] | None = None
        if dataset is not None:
            self.expect_dataset(dataset)

    @property
    def store(self) -> Any:
        """The ranker's open document store, or None."""
        return getattr(self.ranker, "store", None)

    def expect_dataset(self, dataset: str | Any, data_dir: str | None = None) -> None:
        """Refuse at once a store built on another collection than `dataset` (a name or a micebench dataset)."""
        if self.store is None:
            return
        from micebench.data import load_dataset
        from micebench.pipeline import check_store_dataset

        ds = load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
        check_store_dataset(str(self.store.folder), self.store.manifest, ds)

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
        check_frame(frame, needed)
        frame["qid"], frame["docno"] = frame["qid"].astype(str), frame["docno"].astype(str)
        if "text" not in frame.columns:
            frame["text"] = ""
        if self.store is not None:
            self._check_against_store(frame)
        frame["score"] = self.ranker.score_candidates(frame)
        return pt.model.add_ranks(frame)

    def _check_against_store(self, frame: pd.DataFrame) -> None:
        """Ids the store lacks, and texts other than those of the store's collection, are one line naming why."""
        docnos = frame["docno"].unique().tolist()
        absent = self.store.missing(docnos)
        built = store_collection_names(self.store.manifest)
        if absent:
            raise MicebenchError(
                f"{len(absent)} of {len(docnos)} documents of the frame are not in the store {self.store.folder} "
                f"(e.g. {absent[0]!r}), built on {built}: if the frame comes from {built}, add them with `micebench "
                "precompute --extend`; a frame of another collection needs a store built on that collection"
            )
        has_text = frame["text"].notna() & frame["text"].astype(str).str.strip().ne("")
        if not has_text.any():
            return
        if self._store_texts is None:
            self._store_texts = store_collections(self.store.manifest)
        rows = frame.index[has_text]
        for ds in self._store_texts:
            stored = frame.loc[rows, "docno"].map(ds.doc_texts(frame.loc[rows, "docno"].unique().tolist()))
            given = frame.loc[rows, "text"].astype(str)
            differ = stored.notna() & (given.str.split().str.join(" ") != stored.fillna("").str.split().str.join(" "))
            for row in rows[differ.to_numpy()]:  # whitespace aside they differ: a body without its title still counts
                docno = frame.at[row, "docno"]
                if not same_text(str(frame.at[row, "text"]), str(stored.at[row])):
                    raise MicebenchError(
                        f"row {row} (qid {frame.at[row, 'qid']}, docno {docno}): its text is not the text of "
                        f"{docno!r} in {ds.name!r}, the collection the store {self.store.folder} was built on: "
                        "the frame comes from another collection; precompute a store for it"
                    )

    def __repr__(self) -> str:
        return f"micebench.Reranker({self.ranker.name!r})"


def check_frame(frame: pd.DataFrame, columns: list[str]) -> None:
    """One line naming the first bad row: a missing value (NaN, None) in a column that is read, one qid carrying
    two query texts, or one docno twice under a qid with different texts (scored as one document otherwise)."""
    for column in columns:
        null = frame[column].isna()
        if null.any():
            row = int(null.idxmax())
            raise MicebenchError(f"row {row}{_row_ids(frame, row)}: no {column} (a missing value, NaN)")
    row, first = _second_text(frame, ["qid"], "query")
    if row is not None:
        raise MicebenchError(
            f"row {row}{_row_ids(frame, row)}: qid {frame.at[row, 'qid']} carries two query texts "
            f"({first[:40]!r} and {str(frame.at[row, 'query'])[:40]!r})"
        )
    if "text" in columns:
        row, _ = _second_text(frame, ["qid", "docno"], "text")
        if row is not None:
            raise MicebenchError(
                f"row {row}{_row_ids(frame, row)}: docno {frame.at[row, 'docno']} appears twice under qid "
                f"{frame.at[row, 'qid']} with different texts"
            )


def _second_text(frame: Any, keys: list[str], column: str) -> tuple[int | None, str]:
    """The first row whose `column` differs from the first text of its `keys` group, with that first text."""
    first = frame.groupby([frame[k].astype(str) for k in keys], sort=False)[column].transform("first")
    other = frame[column].astype(str) != first.astype(str)
    if not other.any():
        return None, ""
    row = int(other.idxmax())
    return row, str(first.at[row])


def _row_ids(frame: pd.DataFrame, row: int) -> str:
    ids = [f"{c} {frame.at[row, c]}" for c in ("qid", "docno") if c in frame.columns and pd.notna(frame.at[row, c])]
    return f" ({', '.join(ids)})" if ids else ""


def same_text(given: str, stored: str) -> bool:
    """Whether a frame's text is the collection's (whitespace aside; a body without its title counts)."""
    a, b = " ".join(given.split()), " ".join(stored.split())
    return a == b or (bool(a) and a in b) or (bool(b) and b in a)


def store_collection_names(manifest: dict[str, Any]) -> str:
    """The collections a store's manifest says it was built on, quoted, or `another collection`."""
    records = [manifest.get("dataset")] + [s.get("dataset") for s in manifest.get("sources", []) if isinstance(s, dict)]
    names = dict.fromkeys(repr(str(r.get("name"))) for r in records if isinstance(r, dict) and r.get("name"))
    return " and ".join(names) or "another collection"


def store_collections(manifest: dict[str, Any]) -> list[Any]:
    """The collections a store was built on, opened where they can be (by their recorded source, then name)."""
    from micebench.data import load_dataset

    opened = []
    records = [manifest.get("dataset")] + [s.get("dataset") for s in manifest.get("sources", []) if isinstance(s, dict)]
    for record in (r for r in records if isinstance(r, dict)):
        kind, _, target = str(record.get("source", "")).partition(":")
        for name in ([target.split("#", 1)[0]] if kind in ("local", "ir_datasets") else []) + [record.get("name")]:
            if not name:
                continue
            try:
                ds = load_dataset(str(name))
            except Exception:  # noqa: BLE001 - a collection that cannot be opened here is not compared
                continue
            if ds.fingerprint() == record.get("fingerprint") or not record.get("fingerprint"):
                opened.append(ds)
                break
    return opened


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
    return FirstStage(pt.model.add_ranks(frame), ds)


class FirstStage(SourceTransformer):
    """`first_stage`'s transformer: a `Reranker` composed after it (`>>`) learns its collection, so that a
    document store built on another one is refused when the pipeline is built."""

    def __init__(self, df: pd.DataFrame, dataset: Any):
        super().__init__(df)
        self.dataset = dataset

    def __rshift__(self, right: Any) -> pt.Transformer:
        if isinstance(right, Reranker):
            right.expect_dataset(self.dataset)
        return super().__rshift__(right)
