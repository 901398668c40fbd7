"""`colbert`: late interaction (ColBERT): BERT token embeddings, linear projection, L2 norm, MaxSim sum.

Queries are `[CLS] [Q] q [SEP]` padded with `[MASK]` to the query length (query augmentation: the mask tokens
are not attended to but their embeddings take part in MaxSim); documents are `[CLS] [D] d [SEP]` with padding
and punctuation left out of MaxSim. Loads ColBERTv2 checkpoints (BERT + `linear.weight`, markers [unused0] and
[unused1]), PyLate checkpoints (sentence-transformers layout with a Dense module and "[Q] "/"[D] " prefixes),
or builds a ColBERT from any BERT or ModernBERT checkpoint with a fresh projection (a vocabulary without
[unused0]/[unused1] gets PyLate's "[Q] "/"[D] " tokens added).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from micebench.errors import DataError, MicebenchError, first_line
from micebench.models.batching import length_sorted_batches, pad_multiple, pad_rows, scores_to_host, to_device
from micebench.models.checkpoints import (
    SAFETENSORS_MARKER,
    check_family,
    config_field,
    damaged,
    json_list_of_objects,
    json_object,
)
from micebench.models.hf import (
    capped_length,
    load_weights,
    move_model,
    resolve_model,
    safetensors_problem,
    weight_fingerprint,
)
from micebench.rankers.capabilities import Benchmarkable, StoreBacked, Trainable
from micebench.rankers.memory import oom_backoff
from micebench.rankers.model import ModelRanker
from micebench.rankers.options import ColBERTOptions
from micebench.rankers.registry import register_ranker

#: ColBERTv2's projection, saved beside the encoder's weights in model.safetensors and read apart from them
PROJECTION_KEYS = ("linear.weight", "linear.bias")

STORE_MODE = "embeddings"
#: PyLate's query and document prefixes (config_sentence_transformers.json keys) and their defaults
PYLATE_PREFIXES = {"query_prefix": "[Q] ", "document_prefix": "[D] "}
#: activations of a PyLate Dense module that colbert applies (torch.nn classes without arguments)
DENSE_ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU")


def _read_tensor_file(folder: Path, names: tuple[str, ...]) -> dict[str, Any]:
    import torch

    for name in names:
        path = folder / name
        if path.is_file():
            try:
                if name.endswith(".safetensors"):
                    from safetensors.torch import load_file

                    return load_file(str(path))
                return torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as err:  # safetensors, pickle and zip errors of a damaged or foreign file
                if name.endswith(".safetensors"):
                    reason = safetensors_problem(path) or first_line(err)
                else:  # torch's own message advises unsafe loading, which would not mend a damaged file
                    reason = f"not a torch weights file micebench can read safely: {type(err).__name__}"
                raise DataError(f"damaged file {path} ({reason})") from None
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
        raise MicebenchError(f"cannot load model {checkpoint!r}: {first_line(err)}") from None


def maxsim(q: Any, docs: Any, keep: Any) -> Any:
    """ColBERT's score: the sum over query tokens of the best similarity over kept document tokens.

    `q` is one query's (Lq, dim) embeddings shared by every document, or (B, Lq, dim) one query per document;
    `docs` is (B, Ld, dim) and `keep` (B, Ld). Returns (B,) float scores, differentiable. Ranking and the
    training loss both call this one function.
    """
    import torch

    equation = "qd,bld->bql" if q.dim() == 2 else "bqd,bld->bql"
    sims = torch.einsum(equation, q, docs).float()
    sims = sims.masked_fill(~keep.bool()[:, None, :], float("-inf"))
    return sims.max(-1).values.sum(-1)


@register_ranker("colbert", "ColBERT late interaction: projected token embeddings, MaxSim (ColBERTv2, PyLate)")
class ColBERTRanker(StoreBacked, Trainable, Benchmarkable, ModelRanker):
    """ColBERT scoring; documents can come from a precomputed store of their token embeddings."""

    name = "colbert"
    Options = ColBERTOptions
    store_kind = "colbert"
    store_modes = (STORE_MODE,)
    bench_modes = ("none", "precomputed")
    bench_mode_aliases = {"states": "precomputed", STORE_MODE: "precomputed"}

    def __init__(self, options: ColBERTOptions):
        import torch
        from transformers import AutoModel

        self._torch = torch
        folder = _local_folder(options.checkpoint)
        check_family(str(folder), self.name, own="colbert")
        super().__init__(options)
        self.load_tokenizer(str(folder))
        # the projection (ColBERTv2's linear.*) is read apart, by _read_projection
        self.encoder = load_weights(AutoModel, str(folder), PROJECTION_KEYS, attn_implementation="sdpa")
        hidden = self.encoder.config.hidden_size
        self.query_length, self.doc_length = options.query_length, options.doc_length
        # PyLate's settings, at PyLate's defaults unless the checkpoint sets them
        self.query_expansion, self.attend_to_expansion = True, False
        self.skiplist_words: list[str] | None = None
        self._bias, self._activation = None, "Identity"
        self.format, weight, markers = self._read_projection(folder)
        self.query_length = capped_length(self.query_length, self.encoder.config, "--query-length")
        self.doc_length = capped_length(self.doc_length, self.encoder.config, "--doc-length")
        if weight is not None:
            self._check_projection(folder, weight, hidden)
        else:
            generator = torch.Generator().manual_seed(0)
            weight = torch.randn(options.dim, hidden, generator=generator) * self.encoder.config.initializer_range
            self.format = "fresh projection"
        if self._missing(markers[0]):
            # a vocabulary without BERT's [unused] slots (ModernBERT, RoBERTa): add PyLate's marker tokens
            markers = ("[Q] ", "[D] ")
            self.tokenizer.add_tokens([m for m in markers if self._missing(m)])
            if len(self.tokenizer) > self.encoder.get_input_embeddings().num_embeddings:
                self.encoder.resize_token_embeddings(len(self.tokenizer))
        self.projection = torch.nn.Linear(hidden, weight.shape[0], bias=self._bias is not None)
        self.projection.weight.data.copy_(weight)
        if self._bias is not None:
            self.projection.bias.data.copy_(self._bias)
        self.activation = getattr(torch.nn, self._activation)()
        self.q_marker, self.d_marker = (self._token_id(m) for m in markers)
        if self.skiplist_words is None:
            skipped = {self._token_id(c) for c in string.punctuation} - {self.tokenizer.unk_token_id}
        else:  # as PyLate converts them: each word as one token (an unknown word skips [UNK])
            skipped = {self.tokenizer.convert_tokens_to_ids(w) for w in self.skiplist_words} - {None}
        self.skiplist = torch.tensor(sorted(skipped), dtype=torch.long)
        # stores are fingerprinted on the weights as loaded, so a bf16 or int8 run opens a store built in fp32
        low = self.dtype != torch.float32 or self.precision != "fp32"
        self._fingerprint = self._weights_fingerprint() if options.precomputed and low else None
        move_model(self.encoder, self.device, self.dtype)
        move_model(self.projection, self.device, self.dtype)
        self.quantize([self.encoder])  # int8: the encoder's Linear layers; the projection stays fp32
        self.skiplist = self.skiplist.to(self.device)
        self.open_store(options.precomputed)

    def _read_projection(self, folder: Path) -> tuple[str, Any, tuple[str, str]]:
        """The projection weight (its bias and activation set on self), lengths and markers of the checkpoint,
        with PyLate's query and skiplist settings honoured as PyLate applies them."""
        modules = folder / "modules.json"
        if modules.is_file():  # PyLate / sentence-transformers layout
            denses = [m for m in json_list_of_objects(modules) if m.get("type", "").endswith("Dense")]
            if len(denses) > 1:
                raise MicebenchError(f"checkpoint {folder} has {len(denses)} Dense modules; colbert reads only one")
            if denses:
                dense_folder = folder / denses[0].get("path", "")
                self._read_dense_config(dense_folder / "config.json")
                state = _read_tensor_file(dense_folder, ("model.safetensors", "pytorch_model.bin"))
                if "linear.weight" not in state:  # PyLate always saves it: a random projection would score nonsense
                    raise DataError(
                        f"damaged checkpoint {folder}: its Dense module {dense_folder.name or '(root)'} has no "
                        f"projection weights (no linear.weight in model.safetensors or pytorch_model.bin)"
                    )
                self._projection_source = dense_folder
                self._bias = state.get("linear.bias")
                config = folder / "config_sentence_transformers.json"
                st = json_object(config) if config.is_file() else {}
                self.query_length = config_field(st, config, "query_length", int, self.query_length, least=2)
                self.doc_length = config_field(st, config, "document_length", int, self.doc_length, least=2)
                self.query_expansion = config_field(st, config, "do_query_expansion", bool, True)
                attend = config_field(st, config, "attend_to_expansion_tokens", bool, False)
                self.attend_to_expansion = attend and self.query_expansion  # PyLate: no expansion, nothing to attend
                words = config_field(st, config, "skiplist_words", list)
                if words is not None and not all(isinstance(w, str) for w in words):
                    raise damaged(config, "skiplist_words", "must be a list of strings")
                self.skiplist_words = words
                markers = tuple(config_field(st, config, key, str, default) for key, default in PYLATE_PREFIXES.items())
                return "pylate", state.get("linear.weight"), markers  # type: ignore[return-value]
        state = _read_tensor_file(folder, ("model.safetensors", "pytorch_model.bin"))
        weight = state.get("linear.weight")
        self._projection_source = folder
        self._bias = state.get("linear.bias")
        metadata = folder / "artifact.metadata"
        if metadata.is_file():
            meta = json_object(metadata)
            self.query_length = config_field(meta, metadata, "query_maxlen", int, self.query_length, least=2)
            self.doc_length = config_field(meta, metadata, "doc_maxlen", int, self.doc_length, least=2)
        return ("colbertv2" if weight is not None else "bert"), weight, ("[unused0]", "[unused1]")

    def _check_projection(self, folder: Path, weight: Any, hidden: int) -> None:
        """The projection (and its bias) of a ColBERTv2 or PyLate checkpoint fit its encoder: a (dim, hidden) matrix
        and a (dim,) bias, as the Dense config.json says when it gives sizes."""
        where = self._projection_source
        name = where.name if where != folder else "model.safetensors"
        shape = tuple(weight.shape)
        if len(shape) != 2 or shape[0] < 1:
            problem = f"linear.weight of {name} has shape {list(shape)}, not (dim, {hidden})"
        elif shape[1] != hidden:
            problem = f"the projection in {name} takes {shape[1]} inputs but the encoder gives {hidden}"
        elif self._bias is not None and tuple(self._bias.shape) != (shape[0],):
            problem = f"linear.bias of {name} has shape {list(self._bias.shape)}, not [{shape[0]}]"
        else:
            problem = self._dense_sizes_problem(where / "config.json", shape) if where != folder else None
        if problem:
            raise DataError(f"damaged checkpoint {folder}: {problem}")

    @staticmethod
    def _dense_sizes_problem(path: Path, shape: tuple[int, ...]) -> str | None:
        """in_features/out_features of a Dense config.json that disagree with its weights (None when they agree)."""
        if not path.is_file():
            return None
        config = json_object(path)
        for field, size in (("in_features", shape[1]), ("out_features", shape[0])):
            given = config_field(config, path, field, int, least=1)
            if given is not None and given != size:
                return f"{path.parent.name}/config.json sets {field} {given}, but linear.weight is {list(shape)}"
        return None

    def _read_dense_config(self, path: Path) -> None:
        """A PyLate Dense module's activation (Identity and the common torch ones) and residual (refused)."""
        if not path.is_file():
            return
        config = json_object(path)
        name = config_field(config, path, "activation_function", str, "torch.nn.modules.linear.Identity")
        short = name.rsplit(".", 1)[-1]
        if short not in DENSE_ACTIVATIONS:
            raise MicebenchError(
                f"checkpoint {path.parent.parent} sets an unsupported Dense activation_function {name!r} "
                f"(colbert honours {', '.join(DENSE_ACTIVATIONS)})"
            )
        self._activation = short
        if config_field(config, path, "use_residual", bool, False):
            raise MicebenchError(
                f"checkpoint {path.parent.parent} sets Dense use_residual, which colbert does not support"
            )

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
    def token_lists(self, texts: list[str], marker: int, max_length: int) -> dict[str, list[list[int]]]:
        """Unpadded ids and mask of `[CLS] marker text [SEP]` per text (the marker inserted after [CLS])."""
        enc = self.tokenizer(texts, truncation=True, max_length=max_length - 1)
        ids = [seq[:1] + [marker] + seq[1:] for seq in enc["input_ids"]]
        mask = [seq[:1] + [1] + seq[1:] for seq in enc["attention_mask"]]
        return {"input_ids": ids, "attention_mask": mask}

    def tokenize(self, texts: list[str], marker: int, max_length: int, pad_to_max: bool) -> tuple[Any, Any]:
        """Ids and mask of `[CLS] marker text [SEP]` (the marker inserted after [CLS]) on the model's device."""
        torch = self._torch
        if pad_to_max:
            enc = self.tokenizer(
                texts, truncation=True, max_length=max_length - 1, return_tensors="pt", padding="max_length"
            )
            ids, mask = enc["input_ids"], enc["attention_mask"]
            column = torch.full((ids.shape[0], 1), marker, dtype=ids.dtype)
            ids = torch.cat([ids[:, :1], column, ids[:, 1:]], dim=1)
            mask = torch.cat([mask[:, :1], torch.ones_like(column), mask[:, 1:]], dim=1)
            return ids.to(self.device), mask.to(self.device)
        batch = self.host_batch(self.token_lists(texts, marker, max_length), range(len(texts)))
        return batch["input_ids"], batch["attention_mask"]

    def doc_batches(self, docs: list[str]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """(positions, padded batch on the device) of `[CLS] [D] doc [SEP]`, tokenised once up front, in
        length-sorted batches."""
        lists = self.token_lists(docs, self.d_marker, self.doc_length) if docs else {}
        for idx in length_sorted_batches(docs, self.batch_size):
            yield idx, self.host_batch(lists, idx)

    def query_tokens(self, queries: list[str]) -> tuple[Any, Any]:
        """Ids (padding replaced by [MASK], ColBERT's query augmentation) and mask of `[CLS] [Q] query [SEP]`;
        a PyLate checkpoint may attend to the [MASK] tokens, or turn the augmentation off (no [MASK] padding)."""
        if not self.query_expansion:
            return self.tokenize(queries, self.q_marker, self.query_length, pad_to_max=False)
        ids, mask = self.tokenize(queries, self.q_marker, self.query_length, pad_to_max=True)
        if self.attend_to_expansion:
            mask = self._torch.ones_like(mask)
        return ids.masked_fill(ids == self.tokenizer.pad_token_id, self.tokenizer.mask_token_id), mask

    def host_batch(self, lists: dict[str, list[list[int]]], rows: Any) -> dict[str, Any]:
        """Rows of `token_lists` output, padded (to a multiple of 8 on CUDA) and moved to the model's device."""
        batch = pad_rows(self.tokenizer, lists, rows, pad_multiple(self.device), self.doc_length)
        return to_device(batch, self.device)

    def embed(self, ids: Any, mask: Any) -> Any:
        """Projected, L2-normalised token embeddings (B, L, dim)."""
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return self._torch.nn.functional.normalize(self.activation(self.projection(hidden)), p=2, dim=-1)

    def encode_query(self, query: str) -> Any:
        """(query_length, dim) embeddings; [MASK] padding is embedded (not attended to) and used in MaxSim."""
        return self.encode_queries([query])[0]

    encode_stored_query = encode_query

    def encode_queries(self, queries: list[str]) -> Any:
        """(N, query_length, dim) embeddings of several queries in one forward pass (queries are padded to the same
        fixed length, so batching them changes nothing)."""
        if any(not query.strip() for query in queries):
            raise MicebenchError("empty query text")
        ids, mask = self.query_tokens(queries)
        if not self.query_expansion:  # padding of a batch of queries: zero vectors add nothing to MaxSim
            return self.embed(ids, mask) * mask[..., None]
        return self.embed(ids, mask)

    def embed_documents(self, ids: Any, mask: Any) -> tuple[Any, Any]:
        """(B, L, dim) embeddings of tokenised documents and the MaxSim mask (padding and punctuation excluded)."""
        keep = mask.bool() & ~self._torch.isin(ids, self.skiplist)
        return self.embed(ids, mask), keep.long()

    def encode_documents(self, texts: list[str]) -> tuple[Any, Any]:
        """(B, L, dim) embeddings and the MaxSim mask (padding and punctuation excluded)."""
        return self.embed_documents(*self.tokenize(texts, self.d_marker, self.doc_length, pad_to_max=False))

    @staticmethod
    def host_scores(q: Any, docs: Any, keep: Any) -> np.ndarray:
        """`maxsim` of one query against a batch, as float64 on the host."""
        return maxsim(q, docs, keep).double().cpu().numpy()

    @oom_backoff
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        """Documents tokenised once, encoded in length-sorted batches; the scores reach the host in one copy."""
        with self._torch.inference_mode():
            q = self.encode_query(query)
            batches = self.doc_batches(docs)
            return scores_to_host(
                ((i, maxsim(q, *self.embed_documents(b["input_ids"], b["attention_mask"]))) for i, b in batches),
                len(docs),
            )

    def effective_options(self) -> dict[str, Any]:
        """The declared options, with the lengths and projection size the checkpoint really has."""
        return {
            **super().effective_options(),
            "dim": self.projection.out_features,
            "query_length": self.query_length,
            "doc_length": self.doc_length,
        }

    # -- StoreBacked ------------------------------------------------------------------------------------------
    def store_fields(self, mode: str) -> tuple[list[str], str]:
        self.check_store_mode(mode)
        return ["embeddings"], self.store_kind

    def _weights_fingerprint(self) -> str:
        header = f"colbert|{self.doc_length}|{self.d_marker}"
        if self._activation != "Identity" or self.skiplist_words is not None:  # documents they change
            header += f"|{self._activation}|{self.skiplist.tolist()}"
        return weight_fingerprint(header, self.encoder, self.projection)

    def store_fingerprint(self, mode: str) -> str:
        return self._fingerprint or self._weights_fingerprint()

    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        """Document embeddings and their MaxSim mask (and the token ids, for a `--token-means` codec)."""
        from micebench.store.codecs import TOKEN_IDS

        ids, mask = self.tokenize(texts, self.d_marker, self.doc_length, pad_to_max=False)
        emb, keep = self.embed_documents(ids, mask)
        return {"embeddings": emb, TOKEN_IDS: ids}, keep

    def score_gathered(self, query: Any, tensors: dict[str, Any], mask: Any, padded: bool) -> Any:
        """MaxSim against stored document embeddings."""
        return maxsim(query, tensors["embeddings"], mask)

    # -- Trainable ----------------------------------------------------------------------------------------------
    def trainable_module(self) -> Any:
        return self._torch.nn.ModuleDict({"encoder": self.encoder, "projection": self.projection})

    def score_pairs(self, queries: list[str], docs: list[str]) -> Any:
        """Each pair's query embeddings against its document, through the same `maxsim` as ranking."""
        emb, keep = self.encode_documents(docs)
        return maxsim(self.encode_queries(queries), emb, keep)

    def save_checkpoint(self, folder: Path) -> None:
        """A ColBERTv2-layout folder: the encoder, `linear.weight` beside it, and the lengths in artifact.metadata."""
        from safetensors.torch import save_file

        self.encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        state = {k: v.contiguous() for k, v in self.encoder.state_dict().items()}
        if self._activation != "Identity":
            raise MicebenchError(f"a colbert with a {self._activation} projection cannot be saved as ColBERTv2")
        state["linear.weight"] = self.projection.weight.detach().contiguous()
        if self.projection.bias is not None:
            state["linear.bias"] = self.projection.bias.detach().contiguous()
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt", SAFETENSORS_MARKER: "colbert"})
        (folder / "artifact.metadata").write_text(
            json.dumps({"query_maxlen": self.query_length, "doc_maxlen": self.doc_length})
        )

    # -- Benchmarkable ------------------------------------------------------------------------------------------
    def bench_tokenize(self, query: str, docs: list[str], mode: str) -> Callable[[], Any] | None:
        if mode == "none":
            return lambda: (self.query_tokens([query]), list(self.doc_batches(docs)))
        return lambda: self.query_tokens([query])

    def bench_call(self, query_ids: Any, doc_ids: Any, mode: str) -> Callable[[], Any]:
        """`none` encodes the documents in the call; `precomputed` gathers their embeddings from a packed store."""
        from micebench.store.reader import PackedTensors

        torch = self._torch
        q_ids, d_ids = query_ids.to(self.device), doc_ids.to(self.device)
        q_mask, d_mask = torch.ones_like(q_ids), torch.ones_like(d_ids)
        if mode == "none":

            def call() -> Any:
                with torch.inference_mode():
                    emb = self.embed(d_ids, d_mask)
                    return self.host_scores(self.embed(q_ids, q_mask)[0], emb, d_mask)

            return call
        with torch.inference_mode():
            emb = self.embed(d_ids, d_mask)
        store = PackedTensors({"embeddings": emb[d_mask.bool()]}, d_mask.sum(1))
        rows = torch.arange(len(d_ids), device=self.device)

        def stored_call() -> Any:
            with torch.inference_mode():
                tensors, keep = store.gather(rows)
                return self.host_scores(self.embed(q_ids, q_mask)[0], tensors["embeddings"], keep)

        return stored_call

    def bench_modules(self, everything: bool = False) -> list[Any]:
        return [self.encoder, self.projection]

    def bench_flops(self, query_len: int, doc_len: int, batch: int, mode: str) -> float:
        from micebench.models import flops

        shape = flops.shape_of(self.encoder.config)
        return flops.colbert(query_len, doc_len, shape, self.projection.out_features, batch, mode)

    def bench_facts(self) -> dict[str, Any]:
        return {"attention": "sdpa", "dim": self.projection.out_features}

    def weight_modules(self) -> list[Any]:
        return [self.encoder, self.projection]

    def details(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "dim": self.projection.out_features,
            "query_length": self.query_length,
            "doc_length": self.doc_length,
            **self.store_facts(),
        }
