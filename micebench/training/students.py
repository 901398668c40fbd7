"""Differentiable scoring of (query, document) pairs for each trainable ranker, and saving the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from micebench.errors import MicebenchError
from micebench.rankers.models import logits_to_scores


class Student:
    """Wraps a ranker so that `scores(queries, docs)` returns a differentiable (N,) tensor."""

    def __init__(self, ranker: Any):
        self.ranker = ranker
        self.kind = ranker.name

    @property
    def module(self) -> torch.nn.Module:
        if self.kind == "colbert":
            return torch.nn.ModuleDict({"encoder": self.ranker.encoder, "projection": self.ranker.projection})
        return self.ranker.model

    def scores(self, queries: list[str], docs: list[str]) -> torch.Tensor:
        r = self.ranker
        if self.kind in ("ce", "masked-ce"):
            logits = r.forward(r.tokenize_pairs(queries, docs)).logits
            return logits_to_scores(logits)
        if self.kind == "mice":
            unique = list(dict.fromkeys(queries))
            q = r._tokenize(unique, r.mice.query_max_length)
            d = r._tokenize(docs, r.mice.doc_max_length)
            index = torch.tensor([unique.index(x) for x in queries], device=r.device)
            logits = r.model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"], index)
            return logits_to_scores(logits)
        if self.kind == "colbert":
            out = []
            emb, keep = r.encode_documents(docs)
            for i, query in enumerate(queries):
                q = r.encode_query(query)
                sims = torch.einsum("qd,ld->ql", q, emb[i]).masked_fill(~keep[i].bool()[None, :], float("-inf"))
                out.append(sims.max(-1).values.sum())
            return torch.stack(out)
        raise MicebenchError(f"model {self.kind!r} cannot be trained (use ce, masked-ce, mice-l<k>+<m> or colbert)")

    def save(self, folder: Path, meta: dict[str, Any]) -> Path:
        """Write a checkpoint that `micebench run --checkpoint` and `load_ranker` load."""
        folder.mkdir(parents=True, exist_ok=True)
        r = self.ranker
        if self.kind == "mice":
            from micebench.models.mice_io import save_mice

            r.model.mice.trained = True
            save_mice(r.model, r.tokenizer, folder)
        elif self.kind == "colbert":
            from safetensors.torch import save_file

            r.encoder.save_pretrained(folder)
            r.tokenizer.save_pretrained(folder)
            state = {k: v.contiguous() for k, v in r.encoder.state_dict().items()}
            state["linear.weight"] = r.projection.weight.detach().contiguous()
            save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
            (folder / "artifact.metadata").write_text(
                json.dumps({"query_maxlen": r.query_length, "doc_maxlen": r.doc_length})
            )
        else:
            r.model.save_pretrained(folder)
            r.tokenizer.save_pretrained(folder)
        (folder / "micebench_training.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return folder
