"""`colbert`: late interaction (ColBERT): BERT token embeddings, linear projection, L2 norm, MaxSim sum.

Queries are `[CLS] [Q] q [SEP]` padded with `[MASK]` to the query length (query augmentation: the mask tokens
are not attended to but their embeddings take part in MaxSim); documents are `[CLS] [D] d [SEP]` with padding
and punctuation left out of MaxSim. Loads ColBERTv2 checkpoints (BERT + `linear.weight`, markers [unused0] and
[unused1]), PyLate checkpoints (sentence-transformers layout with a Dense module and "[Q] "/"[D] " prefixes),
or builds a ColBERT from any BERT or ModernBERT checkpoint with a fresh projection (a vocabulary without
[unused0]/[unused1] gets PyLate's "[Q] "/"[D] " tokens added).
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any

import numpy as np

from micebench.errors import MicebenchError
from micebench.rankers.base import Ranker, register_ranker
from micebench.rankers.batching import length_sorted_batches
from micebench.rankers.memory import oom_backoff
from micebench.rankers.models import count_parameters, load_pretrained, pick_device, pick_dtype, resolve_model

STORE_KIND = "colbert"
STORE_MODE = "embeddings"


def _read_tensor_file(folder: Path, names: tuple[str, ...]) -> dict[str, Any]:
    import torch

    for name in names:
        path = folder / name
        if path.is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(str(path), map_location="cpu", weights_only=True)
    return {}


def _local_folder(checkpoint: str) -> Path | None:
    """A local folder for the checkpoint; hub ids are fetched with huggingface_hub (users with network)."""
    source = resolve_model(checkpoint)
    if Path(source).is_dir():
        return Path(source)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*/*"]))
    except Exception as err:  # network or repository errors of huggingface_hub
        raise MicebenchError(f"cannot load model {checkpoint!r}: {str(err).splitlines()[0]}") from None


@register_ranker("colbert", "ColBERT late interaction: projected token embeddings, MaxSim (ColBERTv2, PyLate)")
class ColBERTRanker(Ranker):
    """ColBERT scoring; documents can come from a precomputed store of their token embeddings."""

    name = "colbert"
    default_store_mode = STORE_MODE

    def __init__(
        self,
        checkpoint: str = "colbert-ir/colbertv2.0",
        device: str = "auto",
        batch_size: int = 64,
        dtype: str = "fp32",
        dim: int = 128,
        query_length: int = 32,
        doc_length: int = 180,
        precomputed: str | None = None,
        **_: Any,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.checkpoint = checkpoint
        folder = _local_folder(checkpoint)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype)
        self.batch_size = int(batch_size)
        self.tokenizer = load_pretrained(AutoTokenizer, str(folder))
        self.encoder = load_pretrained(AutoModel, str(folder), attn_implementation="sdpa")
        hidden = self.encoder.config.hidden_size
        self.query_length, self.doc_length = query_length, doc_length
        self.format, weight, markers = self._read_projection(folder)
        if weight is None:
            generator = torch.Generator().manual_seed(0)
            weight = torch.randn(dim, hidden, generator=generator) * self.encoder.config.initializer_range
            self.format = "fresh projection"
        if self._missing(markers[0]):
            # a vocabulary without BERT's [unused] slots (ModernBERT, RoBERTa): add PyLate's marker tokens
            markers = ("[Q] ", "[D] ")
            self.tokenizer.add_tokens([m for m in markers if self._missing(m)])
            if len(self.tokenizer) > self.encoder.get_input_embeddings().num_embeddings:
                self.encoder.resize_token_embeddings(len(self.tokenizer))
        self.projection = torch.nn.Linear(hidden, weight.shape[0], bias=False)
        self.projection.weight.data.copy_(weight)
        self.q_marker, self.d_marker = (self._token_id(m) for m in markers)
        self.skiplist = torch.tensor(
            sorted({self._token_id(c) for c in string.punctuation} - {self.tokenizer.unk_token_id}), dtype=torch.long
        )
        self.encoder.to(self.device, dtype=self.dtype).eval()
        self.projection.to(self.device, dtype=self.dtype).eval()
        self.skiplist = self.skiplist.to(self.device)
        self.store = None
        if precomputed:
            from micebench.store.document_store import DocumentStore

            self.store = DocumentStore(
                precomputed, STORE_KIND, self.store_fingerprint(STORE_MODE), STORE_MODE, self.device, self.dtype
            )
        self.needs_text = self.store is None

    def _read_projection(self, folder: Path) -> tuple[str, Any, tuple[str, str]]:
        modules = folder / "modules.json"
        if modules.is_file():  # PyLate / sentence-transformers layout
            entries = json.loads(modules.read_text())
            dense = next((m for m in entries if m.get("type", "").endswith("Dense")), None)
            if dense is not None:
                state = _read_tensor_file(folder / dense["path"], ("model.safetensors", "pytorch_model.bin"))
                weight = state.get("linear.weight")
                config = folder / "config_sentence_transformers.json"
                st = json.loads(config.read_text()) if config.is_file() else {}
                self.query_length = st.get("query_length", self.query_length)
                self.doc_length = st.get("document_length", self.doc_length)
                return "pylate", weight, (st.get("query_prefix", "[Q] "), st.get("document_prefix", "[D] "))
        state = _read_tensor_file(folder, ("model.safetensors", "pytorch_model.bin"))
        weight = state.get("linear.weight")
        metadata = folder / "artifact.metadata"
        if metadata.is_file():
            meta = json.loads(metadata.read_text())
            self.query_length = meta.get("query_maxlen", self.query_length)
            self.doc_length = meta.get("doc_maxlen", self.doc_length)
        return ("colbertv2" if weight is not None else "bert"), weight, ("[unused0]", "[unused1]")

    def _missing(self, token: str) -> bool:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        return tid is None or tid == self.tokenizer.unk_token_id

    def _token_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if self._missing(token):
            tid = self.tokenizer.convert_tokens_to_ids(token.strip())
        if tid is None:
            raise MicebenchError(f"token {token!r} is not in the vocabulary of {self.checkpoint!r}")
        return int(tid)

    # -- encoding -----------------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str], marker: int, max_length: int, pad_to_max: bool) -> tuple[Any, Any]:
        torch = self._torch
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=max_length - 1,
            return_tensors="pt",
            padding="max_length" if pad_to_max else True,
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        column = torch.full((ids.shape[0], 1), marker, dtype=ids.dtype)
        ids = torch.cat([ids[:, :1], column, ids[:, 1:]], dim=1)
        mask = torch.cat([mask[:, :1], torch.ones_like(column), mask[:, 1:]], dim=1)
        return ids.to(self.device), mask.to(self.device)

    def _embed(self, ids: Any, mask: Any) -> Any:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return self._torch.nn.functional.normalize(self.projection(hidden), p=2, dim=-1)

    def encode_query(self, query: str) -> Any:
        """(query_length, dim) embeddings; [MASK] padding is embedded (not attended to) and used in MaxSim."""
        if not query.strip():
            raise MicebenchError("empty query text")
        ids, mask = self._tokenize([query], self.q_marker, self.query_length, pad_to_max=True)
        ids = ids.masked_fill(ids == self.tokenizer.pad_token_id, self.tokenizer.mask_token_id)
        return self._embed(ids, mask)[0]

    def encode_documents(self, texts: list[str]) -> tuple[Any, Any]:
        """(B, L, dim) embeddings and the MaxSim mask (padding and punctuation excluded)."""
        ids, mask = self._tokenize(texts, self.d_marker, self.doc_length, pad_to_max=False)
        keep = mask.bool() & ~self._torch.isin(ids, self.skiplist)
        return self._embed(ids, mask), keep.long()

    def maxsim(self, q: Any, docs: Any, keep: Any) -> np.ndarray:
        """Sum over query tokens of the best cosine similarity over kept document tokens."""
        sims = self._torch.einsum("qd,bld->bql", q, docs).float()
        sims = sims.masked_fill(~keep.bool()[:, None, :], float("-inf"))
        return sims.max(-1).values.sum(-1).double().cpu().numpy()

    @oom_backoff
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        scores = np.empty(len(docs), dtype=np.float64)
        with self._torch.inference_mode():
            q = self.encode_query(query)
            for idx in length_sorted_batches(docs, self.batch_size):
                emb, keep = self.encode_documents([docs[i] for i in idx])
                scores[idx] = self.maxsim(q, emb, keep)
        return scores

    @oom_backoff
    def score_stored(self, query: str, docnos: list[str]) -> np.ndarray:
        """MaxSim against stored document embeddings (no document text needed)."""
        scores = np.empty(len(docnos), dtype=np.float64)
        with self._torch.inference_mode():
            q = self.encode_query(query)
            positions = self.store.positions(docnos)
            for start in range(0, len(docnos), self.batch_size):
                tensors, keep = self.store.gather(positions[start : start + self.batch_size])
                scores[start : start + len(keep)] = self.maxsim(q, tensors["embeddings"], keep)
        return scores

    # -- document store -----------------------------------------------------------------------------------------
    def store_fields(self, mode: str) -> tuple[list[str], str]:
        if mode != STORE_MODE:
            raise MicebenchError(f"unknown store mode {mode!r} for ColBERT (it stores {STORE_MODE})")
        return ["embeddings"], STORE_KIND

    def store_fingerprint(self, mode: str) -> str:
        digest = hashlib.sha256(f"colbert|{self.doc_length}|{self.d_marker}".encode())
        for module in (self.encoder, self.projection):
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:20]

    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        emb, keep = self.encode_documents(texts)
        return {"embeddings": emb}, keep

    def describe(self) -> dict[str, Any]:
        info = {
            "ranker": self.name,
            "checkpoint": self.checkpoint,
            "format": self.format,
            "parameters": count_parameters(self.encoder) + count_parameters(self.projection),
            "dim": self.projection.out_features,
            "query_length": self.query_length,
            "doc_length": self.doc_length,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "attention": self.encoder.config._attn_implementation,
        }
        if self.store is not None:
            info["store"] = {"path": str(self.store.folder), "bytes_per_doc": self.store.manifest["bytes_per_doc"]}
        return info
