"""The dataset contract every collection source (local folder, ir_datasets) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from micebench.data.facts import DatasetFacts
from micebench.data.trec import Qrels, Run

if TYPE_CHECKING:
    from micebench.evaluation.measures import Evaluation


def join_title(title: str | None, text: str | None) -> str:
    """Document text as BEIR and MTEB build it: title, a space, then the body (title omitted when empty)."""
    title = (title or "").strip()
    text = text or ""
    return f"{title} {text}" if title else text


def chunked(docs: Iterable[tuple[str, str]], size: int) -> Iterator[tuple[list[str], list[str]]]:
    """Group a stream of (docno, text) into lists of at most `size` ids and texts."""
    ids: list[str] = []
    texts: list[str] = []
    for docno, text in docs:
        ids.append(docno)
        texts.append(text)
        if len(ids) == size:
            yield ids, texts
            ids, texts = [], []
    if ids:
        yield ids, texts


#: document ids looked up per call by `Dataset.absent_docs` where the corpus has random access
LOOKUP_CHUNK = 100_000


class Dataset(ABC):
    """A test collection: queries, judgements for one split, a streamable corpus, optional candidates."""

    #: the name the user gave, used for result folders
    name: str
    #: where it resolved, e.g. ``local:/data/scifact`` or ``ir_datasets:beir/scifact/test``
    source: str

    @abstractmethod
    def queries(self) -> dict[str, str]:
        """All queries of the split as {qid: text}."""

    @abstractmethod
    def qrels(self) -> Qrels:
        """Judgements of the split as {qid: {docno: grade}}."""

    @abstractmethod
    def iter_docs(self) -> Iterator[tuple[str, str]]:
        """Stream the corpus as (docno, text) without holding it in memory."""

    @abstractmethod
    def doc_texts(self, docnos: Iterable[str]) -> dict[str, str]:
        """Texts of the given documents only; ids absent from the corpus are left out."""

    def absent_docs(self, docnos: Iterable[str]) -> list[str]:
        """The ids among `docnos` that the corpus lacks, sorted (ids only: texts are neither kept nor checked).

        This default looks them up `LOOKUP_CHUNK` at a time (random access, as ir_datasets' docs_store has)."""
        ordered = sorted(set(docnos))
        found: set[str] = set()
        for start in range(0, len(ordered), LOOKUP_CHUNK):
            found.update(self.doc_texts(ordered[start : start + LOOKUP_CHUNK]))
        return [d for d in ordered if d not in found]

    def candidate_names(self) -> list[str]:
        """Names of the first-stage runs that ship with the dataset (e.g. ``bm25``)."""
        return []

    def candidates(self, name: str) -> Run:
        """A shipped first-stage run by name."""
        raise KeyError(name)

    def rerank_set(self, run: Run) -> Run:
        """The candidates a collection's protocol re-ranks, given the first stage's top-k (the run itself; NanoBEIR's
        evaluator protocol adds the judged positives)."""
        return run

    def evaluate(self, run: Run, measures: Sequence[str]) -> Evaluation:
        """Evaluate a run on this collection's judgements (ranx; a protocol may compute a measure its own way)."""
        from micebench.evaluation.measures import evaluate

        return evaluate(self.qrels(), run, measures, rel_level=self.relevance_level)

    def fingerprint(self) -> str:
        """A string that changes when the corpus changes; keys on-disk caches such as BM25 indexes."""
        return self.source

    #: how the collection is evaluated (the dataset registry sets it when it opens a dataset)
    facts: DatasetFacts = DatasetFacts()

    @property
    def relevance_level(self) -> int:
        """Lowest grade counted as relevant by binary measures (2 for TREC DL passage judgements, else 1)."""
        return self.facts.relevance_level

    @property
    def validation_measure(self) -> str:
        """The measure training validates on (RR@10 for MS MARCO dev, else nDCG@10)."""
        return self.facts.validation_measure

    def judged_queries(self) -> dict[str, str]:
        """Queries that have at least one judgement in the split: the ones that are evaluated."""
        qrels = self.qrels()
        return {qid: text for qid, text in self.queries().items() if qid in qrels}

    def describe(self) -> dict[str, str]:
        """A small provenance record for manifests."""
        return {"name": self.name, "source": self.source, "fingerprint": self.fingerprint()}
