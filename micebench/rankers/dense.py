"""`dense`: a bi-encoder (mean or CLS pooling as its sentence-transformers config says), dot product."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from micebench.errors import MicebenchError
from micebench.models.batching import length_sorted_batches
from micebench.models.checkpoints import check_family
from micebench.models.hf import capped_length, load_model, read_sentence_transformers_config
from micebench.progress import progress_bar
from micebench.rankers.contract import checked_scores
from micebench.rankers.memory import oom_backoff
from micebench.rankers.model import ModelRanker
from micebench.rankers.options import DenseOptions
from micebench.rankers.registry import register_ranker

_PAIR_CHUNK = 65_536


@register_ranker("dense", "bi-encoder, mean or CLS pooling (default: packaged all-MiniLM-L6-v2)")
class DenseRanker(ModelRanker):
    """Encodes query and documents independently; each distinct document is encoded once per call."""

    name = "dense"
    Options = DenseOptions

    def __init__(self, options: DenseOptions):
        import torch
        from transformers import AutoModel

        check_family(options.checkpoint, self.name)  # a MICE or ColBERT checkpoint would lose weights silently
        st_config = read_sentence_transformers_config(options.checkpoint)
        super().__init__(options)
        self.max_length = int(options.max_length or st_config.get("max_seq_length") or 512)
        self.normalize = st_config.get("normalize", True) if options.normalize is None else options.normalize
        self.pooling = st_config.get("pooling", "mean")
        self.load_tokenizer()
        self.model = load_model(AutoModel, self.checkpoint, self.device, self.dtype, attn_implementation="sdpa")
        self.quantize([self.model])
        self.max_length = capped_length(self.max_length, self.model.config)
        self._torch = torch
        #: (doc ids, their embeddings, query ids, theirs) of the frame given to `prepare`
        self._prepared: tuple[Any, ...] | None = None

    @oom_backoff
    def encode(self, texts: list[str], description: str = "encoding") -> np.ndarray:
        """Pooled (and normalised) embeddings, one row per text, float32."""
        torch = self._torch
        dim = self.model.config.hidden_size
        out = np.empty((len(texts), dim), dtype=np.float32)
        with torch.inference_mode(), progress_bar(description, total=len(texts), unit="texts") as bar:
            for idx in length_sorted_batches(texts, self.batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                out[idx] = pooled.cpu().numpy()
                bar.advance(len(idx))
        return out

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        if not query.strip():
            raise MicebenchError("empty query text")
        q = self.encode([query])[0]
        return (self.encode(docs) @ q).astype(np.float64)

    def prepare(self, candidates: pd.DataFrame) -> None:
        """Encode every distinct query and document of a whole frame once; later `rerank` calls on parts of
        it reuse these embeddings (so a run split into chunks scores exactly like one done in one go)."""
        docs = candidates.drop_duplicates("docno")
        queries = candidates.drop_duplicates("qid")
        if any(not q.strip() for q in queries["query"]):
            raise MicebenchError("empty query text")
        self._prepared = (
            pd.Index(docs["docno"]),
            self.encode(docs["text"].tolist(), "encoding documents"),
            pd.Index(queries["qid"]),
            self.encode(queries["query"].tolist(), "encoding queries"),
        )

    def score_candidates(self, candidates: pd.DataFrame) -> np.ndarray:
        """Encode each distinct query and document once (or reuse `prepare`), then score every pair."""
        prepared = self._prepared
        if prepared is None or not (
            candidates["docno"].isin(prepared[0]).all() and candidates["qid"].isin(prepared[2]).all()
        ):
            self.prepare(candidates)
            prepared = self._prepared
        doc_index, doc_emb, q_index, query_emb = prepared
        doc_codes = doc_index.get_indexer(candidates["docno"])
        q_codes = q_index.get_indexer(candidates["qid"])
        scores = np.empty(len(candidates), dtype=np.float64)
        for start in range(0, len(candidates), _PAIR_CHUNK):  # bounded memory for "full" first stages
            rows = slice(start, start + _PAIR_CHUNK)
            scores[rows] = np.einsum("ij,ij->i", doc_emb[doc_codes[rows]], query_emb[q_codes[rows]])
        return checked_scores(scores, len(candidates))

    def effective_options(self) -> dict[str, Any]:
        return {**super().effective_options(), "max_length": self.max_length, "normalize": self.normalize}

    def weight_modules(self) -> list[Any]:
        return [self.model]

    def head_dtype(self) -> Any:
        return self._torch.float32  # pooling and normalisation in fp32

    def details(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length}
