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

    def search(self, queries: dict[str, str], k: int) -> Run:
        """Top-k matching documents per query; ties at the cut-off go by doc id (reproducible)."""
        qids = sorted(queries)
        tokens = self.tokenizer.tokenize(
            [queries[q] for q in qids], update_vocab="never", return_as="ids", show_progress=False
        )
        run: Run = {}
        with progress_bar("BM25 retrieval", total=len(qids), unit="queries") as bar:
            for qid, ids in zip(qids, tokens, strict=True):
                bar.advance(1)
                ids = [i for i in ids if i < self.model.scores["indptr"].shape[0] - 1]
                scores = np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32) if ids else None
                run[qid] = {} if scores is None else self._top_k(scores, k)
        return run

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
