"""BM25 retrieval with bm25s (Lucene variant, k1=0.9 b=0.4, Porter stemming, English stopwords).

These are Pyserini's defaults for BEIR "flat" indexes; the index is built once per corpus and cached on disk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from micebench.cache import cache_dir
from micebench.data.base import Dataset, chunked
from micebench.data.trec import Run
from micebench.errors import DataError
from micebench.progress import progress_bar

_CHUNK = 20_000


@dataclass(frozen=True)
class BM25Params:
    """BM25 settings; part of the cache key."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str = "porter"
    stopwords: str = "en"

    def key(self) -> str:
        return f"{self.method}-k1{self.k1}-b{self.b}-{self.stemmer}-{self.stopwords}"


def _import_bm25s():
    """Import bm25s, undoing the DEBUG level it sets on its own logger at import time."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _tokenizer(params: BM25Params):
    bm25s = _import_bm25s()
    import Stemmer

    stemmer = Stemmer.Stemmer(params.stemmer) if params.stemmer else None
    return bm25s.tokenization.Tokenizer(stopwords=params.stopwords, stemmer=stemmer)


class BM25Index:
    """A bm25s index over a dataset's corpus plus the doc ids in index order."""

    def __init__(self, model, tokenizer, docnos: list[str], params: BM25Params):
        self.model = model
        self.tokenizer = tokenizer
        self.docnos = np.asarray(docnos, dtype=object)
        self.params = params
        self._rows: dict[str, int] | None = None  # docno -> index row, built on the first score_documents call

    @classmethod
    def build(cls, docs: Iterator[tuple[str, str]], params: BM25Params = BM25Params()) -> BM25Index:
        """Index a stream of (docno, text), tokenising chunk by chunk so raw texts are never all in memory."""
        bm25s = _import_bm25s()

        tokenizer = _tokenizer(params)
        docnos: list[str] = []
        token_ids: list[list[int]] = []
        with progress_bar("BM25 indexing", unit="docs") as bar:
            for ids, texts in chunked(docs, _CHUNK):
                token_ids.extend(tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False))
                docnos.extend(ids)
                bar.advance(len(ids))
        model = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        vocab = tokenizer.get_vocab_dict()
        model.index(bm25s.tokenization.Tokenized(ids=token_ids, vocab=vocab), show_progress=False)
        return cls(model, tokenizer, docnos, params)

    def save(self, folder: Path) -> None:
        """Write the index atomically (temporary folder, then rename)."""
        from micebench.atomic import atomic_folder

        with atomic_folder(folder) as tmp:
            self.model.save(str(tmp / "bm25s"))
            self.tokenizer.save_vocab(str(tmp / "bm25s"))
            self.tokenizer.save_stopwords(str(tmp / "bm25s"))
            with open(tmp / "docnos.json", "w", encoding="utf-8") as handle:
                json.dump(list(self.docnos), handle)
            with open(tmp / "params.json", "w", encoding="utf-8") as handle:
                json.dump(asdict(self.params), handle)

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        bm25s = _import_bm25s()

        params = BM25Params(**json.loads((folder / "params.json").read_text()))
        model = bm25s.BM25.load(str(folder / "bm25s"))
        tokenizer = _tokenizer(params)
        tokenizer.load_vocab(str(folder / "bm25s"))
        tokenizer.load_stopwords(str(folder / "bm25s"))
        docnos = json.loads((folder / "docnos.json").read_text())
        return cls(model, tokenizer, docnos, params)

    def _corpus_scores(self, queries: list[str]) -> Iterator[np.ndarray | None]:
        """Per query, its BM25 score for every document in index order (None when no query term is indexed)."""
        tokens = self.tokenizer.tokenize(queries, update_vocab="never", return_as="ids", show_progress=False)
        vocabulary = self.model.scores["indptr"].shape[0] - 1
        for ids in tokens:
            ids = [i for i in ids if i < vocabulary]
            yield np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32) if ids else None

    def search(self, queries: dict[str, str], k: int) -> Run:
        """Top-k matching documents per query; ties at the cut-off go by doc id (reproducible)."""
        qids = sorted(queries)
        run: Run = {}
        with progress_bar("BM25 retrieval", total=len(qids), unit="queries") as bar:
            for qid, scores in zip(qids, self._corpus_scores([queries[q] for q in qids]), strict=True):
                bar.advance(1)
                run[qid] = {} if scores is None else self._top_k(scores, k)
        return run

    def score_documents(self, query: str, docnos: list[str]) -> np.ndarray:
        """BM25 scores of the given documents for one query, with the whole corpus's statistics (idf, avgdl);
        unlike scoring a short list on its own, these equal the scores `search` ranks by."""
        if self._rows is None:
            self._rows = {str(d): i for i, d in enumerate(self.docnos)}
        row = self._rows
        unknown = [d for d in docnos if d not in row]
        if unknown:
            raise DataError(f"{len(unknown)} document ids are not in the BM25 index (e.g. {unknown[0]!r})")
        scores = next(self._corpus_scores([query]))
        if scores is None:
            return np.zeros(len(docnos), dtype=np.float64)
        return scores[[row[d] for d in docnos]].astype(np.float64)

    def _top_k(self, scores: np.ndarray, k: int) -> dict[str, float]:
        matching = np.flatnonzero(scores > 0)
        if len(matching) > k:
            threshold = np.partition(scores[matching], len(matching) - k)[len(matching) - k]
            above = matching[scores[matching] > threshold]
            tied = matching[scores[matching] == threshold]
            tied = sorted(tied, key=lambda i: self.docnos[i])[: k - len(above)]
            matching = np.concatenate([above, np.asarray(tied, dtype=np.int64)])
        return {str(self.docnos[i]): float(scores[i]) for i in matching}


def bm25_index_for(dataset: Dataset, params: BM25Params = BM25Params()) -> BM25Index:
    """Load the cached index for this corpus and parameters, building and caching it on first use."""
    folder = cache_dir("bm25") / f"{dataset.fingerprint().replace(':', '_').replace('/', '_')}-{params.key()}"
    if (folder / "docnos.json").is_file():
        return BM25Index.load(folder)
    index = BM25Index.build(dataset.iter_docs(), params)
    index.save(folder)
    return index
