"""`mice` / `mice-l<k>+<m>`: the MICE ranker, on the fly or from a precomputed document store."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from micebench.errors import MicebenchError
from micebench.models.batching import length_sorted_batches, pad_multiple, pad_rows, scores_to_host, to_device
from micebench.models.checkpoints import check_family
from micebench.models.hf import DEFAULT_CROSS_ENCODER, capped_length, logits_to_scores, move_model, position_limit
from micebench.models.precision import keep_fp32, modules_dtype
from micebench.rankers.capabilities import Benchmarkable, StoreBacked, Trainable
from micebench.rankers.contract import RankerOptions
from micebench.rankers.memory import oom_backoff
from micebench.rankers.model import ModelRanker
from micebench.rankers.options import MiceOptions
from micebench.rankers.registry import ranker_options, register_ranker, register_ranker_pattern

_SHAPE = re.compile(r"^mice-l(\d+)\+(\d+)$")
#: `mice` without a shape: the paper's headline model, MICE-l4+3
DEFAULT_SHAPE = (4, 3)


def untrained_error(label: str, source: str | None) -> MicebenchError:
    """The refusal of an untrained MICE for an effectiveness run, with the commands that train it."""
    return MicebenchError(
        f"{label} is untrained (converted from {source}) and ranks poorly: train it with `micebench train "
        f"--model {label} --init {source} --train msmarco-passage/train --teacher ce --output "
        f"checkpoints/{label}` and run with --checkpoint checkpoints/{label}/best (offline: `make train-demo` "
        "trains mice-l2+2 on SciFact), or pass --untrained to run it as it is"
    )


@register_ranker("mice", "MICE (default l4+3, the paper's): bottom layers apart, top layers with query cross-attention")
class MiceRanker(StoreBacked, Trainable, Benchmarkable, ModelRanker):
    """Minimal Interaction Cross-Encoder; the query's bottom layers run once per query."""

    name = "mice"
    Options = MiceOptions
    store_kind = "mice"
    store_modes = ("states", "kv")
    bench_modes = ("none", "states", "kv")

    def __init__(self, options: MiceOptions):
        import torch

        from micebench.models.mice import MiceConfig
        from micebench.models.mice_io import convert_cross_encoder, is_mice_checkpoint, load_mice

        self._torch = torch
        checkpoint = options.checkpoint
        check_family(checkpoint, self.name, own="mice")
        super().__init__(options, checkpoint or DEFAULT_CROSS_ENCODER)
        if is_mice_checkpoint(checkpoint):
            self.model, self.tokenizer = load_mice(checkpoint)
            shape = (self.model.mice.merge_layer, self.model.mice.top_layers)
            asked = (options.merge_layer or shape[0], options.top_layers or shape[1])
            if asked != shape:
                raise MicebenchError(
                    f"checkpoint {checkpoint!r} is mice-l{shape[0]}+{shape[1]}, not mice-l{asked[0]}+{asked[1]}"
                )
        else:
            config = MiceConfig(
                merge_layer=DEFAULT_SHAPE[0] if options.merge_layer is None else options.merge_layer,
                top_layers=DEFAULT_SHAPE[1] if options.top_layers is None else options.top_layers,
                top_self_attention=options.top_self_attention,
                query_attends_cls=options.query_attends_cls,
                cls_attends_document=options.cls_attends_document,
                random_top_layers=options.random_top_layers,
                doc_max_length=options.max_length,
            )
            self.model, self.tokenizer = convert_cross_encoder(checkpoint or DEFAULT_CROSS_ENCODER, config)
        mice = self.model.mice
        if options.query_max_length is not None:
            mice.query_max_length = capped_length(options.query_max_length, self.model.config, "--query-max-length")
        limit = position_limit(self.model.config)
        if limit is not None:  # the defaults (512) are the model's own budget, capped without a note
            mice.query_max_length = min(mice.query_max_length, limit)
        mice.doc_max_length = capped_length(mice.doc_max_length, self.model.config)
        # stores are fingerprinted on the weights as loaded, so a bf16 or int8 run opens a store built in fp32
        self._fingerprints = {}
        if options.precomputed and (self.dtype != torch.float32 or self.precision != "fp32"):
            from micebench.store.manifest import read_manifest

            mode = read_manifest(options.precomputed).get("mode")
            if mode in self.store_modes:
                self._fingerprints[mode] = self.model.fingerprint(mode)
        move_model(self.model, self.device, self.dtype)
        if self.dtype != torch.float32:  # scores from an fp32 head: bf16 logits would tie
            keep_fp32(*self.model.head_modules())
        self.quantize([self.model], keep=self.model.head_modules())
        self.untrained = options.untrained
        self.open_store(options.precomputed)

    @classmethod
    def run_label(cls, spec: str, options: dict[str, Any]) -> str:
        """`mice` with a shape given as options is labelled by that shape, like `mice-l<k>+<m>`."""
        k, m = options.get("merge_layer"), options.get("top_layers")
        if spec == "mice" and (k is not None or m is not None):
            return f"mice-l{DEFAULT_SHAPE[0] if k is None else k}+{DEFAULT_SHAPE[1] if m is None else m}"
        return spec

    @property
    def mice(self) -> Any:
        return self.model.mice

    @property
    def label(self) -> str:
        return self.mice.label()

    def check_ready_for_effectiveness(self) -> None:
        if not self.mice.trained and not self.untrained:
            raise untrained_error(self.mice.label(), self.mice.source_checkpoint)

    @classmethod
    def check_before_load(cls, options: RankerOptions) -> None:
        """A MICE converted on the fly is untrained for certain: refuse it before any weights are fetched."""
        from micebench.models.mice_io import is_mice_checkpoint

        assert isinstance(options, MiceOptions)
        if not options.untrained and not is_mice_checkpoint(options.checkpoint):
            shape = (
                DEFAULT_SHAPE[0] if options.merge_layer is None else options.merge_layer,
                DEFAULT_SHAPE[1] if options.top_layers is None else options.top_layers,
            )
            raise untrained_error(f"mice-l{shape[0]}+{shape[1]}", options.checkpoint or DEFAULT_CROSS_ENCODER)

    def effective_options(self) -> dict[str, Any]:
        """The declared options, with the shape and attention options the model really has."""
        mice = self.mice
        return {
            **super().effective_options(),
            "checkpoint": self.checkpoint,
            "merge_layer": mice.merge_layer,
            "top_layers": mice.top_layers,
            "top_self_attention": mice.top_self_attention,
            "query_attends_cls": mice.query_attends_cls,
            "cls_attends_document": mice.cls_attends_document,
            "random_top_layers": mice.random_top_layers,
            "max_length": mice.doc_max_length,
            "query_max_length": mice.query_max_length,
        }

    # -- encoding -----------------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str], max_length: int) -> Any:
        """`[CLS] text [SEP]` batches on the model's device (queries and documents are encoded apart)."""
        return self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(
            self.device
        )

    def encode_query(self, query: str) -> tuple[Any, Any]:
        """Layer-k states of `[CLS] query [SEP]` and its mask (computed once per query)."""
        if not query.strip():
            raise MicebenchError("empty query text")
        batch = self.tokenize([query], self.mice.query_max_length)
        return self.model.encode_bottom(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"]

    encode_stored_query = encode_query

    def device_scores(self, q: tuple[Any, Any], d_mask: Any, d_padded: bool | None = None, **doc: Any) -> Any:
        """Scores of one query's states against a batch of documents (`d_states=` or `d_kv=`), left on the device;
        `d_padded` as `score_from_states` takes it."""
        index = self._torch.zeros(d_mask.shape[0], dtype=self._torch.long, device=self.device)
        logits = self.model.score_from_states(q[0], q[1], d_mask, index, d_padded=d_padded, **doc).float()
        return logits_to_scores(logits)

    def score_states(self, q: tuple[Any, Any], d_mask: Any, **doc: Any) -> np.ndarray:
        """Host scores of one query's states against a batch of documents (`d_states=` or `d_kv=`)."""
        return self.device_scores(q, d_mask, **doc).cpu().numpy()

    @oom_backoff
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        """Documents tokenised once, encoded in length-sorted batches; the scores reach the host in one copy."""
        with self._torch.inference_mode():
            q = self.encode_query(query)
            return scores_to_host(((i, self.text_batch_scores(q, b)) for i, b in self.doc_batches(docs)), len(docs))

    def text_batch_scores(self, q: tuple[Any, Any], batch: dict[str, Any]) -> Any:
        """Scores (on the device) of one padded host batch of documents: their bottom layers, then the top ones."""
        padded = not bool(batch["attention_mask"].all())  # known on the host: nothing waits for the device
        batch = to_device(batch, self.device)
        states = self.model.encode_bottom(batch["input_ids"], batch["attention_mask"])
        return self.device_scores(q, batch["attention_mask"], padded, d_states=states)

    def doc_batches(self, docs: list[str]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """(positions, padded host batch) of `[CLS] doc [SEP]`, tokenised once up front, in length-sorted batches."""
        budget = self.mice.doc_max_length
        encoded = self.tokenizer(docs, truncation=True, max_length=budget) if docs else None
        for idx in length_sorted_batches(docs, self.batch_size):
            yield idx, pad_rows(self.tokenizer, encoded, idx, pad_multiple(self.device), budget)

    # -- StoreBacked ----------------------------------------------------------------------------------------------
    def score_gathered(self, query: Any, tensors: dict[str, Any], mask: Any, padded: bool | None) -> Any:
        """The top layers over gathered layer-k states, or over every top layer's stored keys and values
        (`padded`: whether the rows differ in length, None to read it from the mask); scores left on the device."""
        if "states" not in tensors:
            heads = self.model.top[0].num_heads
            kv = [
                (self._split(tensors[f"k{j}"], heads), self._split(tensors[f"v{j}"], heads))
                for j in range(self.mice.top_layers)
            ]
            return self.device_scores(query, mask, padded, d_kv=kv)
        return self.device_scores(query, mask, padded, d_states=tensors["states"])

    @staticmethod
    def _split(x: Any, heads: int) -> Any:
        b, length, dim = x.shape
        return x.view(b, length, heads, dim // heads).transpose(1, 2)

    def store_fields(self, mode: str) -> tuple[list[str], str]:
        """Tensors a store of this mode holds: layer-k states, or every top layer's cross keys and values."""
        self.check_store_mode(mode)
        if mode == "states":
            return ["states"], self.store_kind
        return [f"{kv}{j}" for j in range(self.mice.top_layers) for kv in ("k", "v")], self.store_kind

    def store_fingerprint(self, mode: str) -> str:
        return self._fingerprints.get(mode) or self.model.fingerprint(mode)

    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        batch = self.tokenize(texts, self.mice.doc_max_length)
        return self.store_encode_ids(batch["input_ids"], batch["attention_mask"], mode)

    def store_encode_ids(self, input_ids: Any, mask: Any, mode: str) -> tuple[dict[str, Any], Any]:
        """Store tensors for tokenised documents: layer-k states, or each top layer's keys and values (and the
        token ids, which a `--token-means` codec uses as side information)."""
        from micebench.store.codecs import TOKEN_IDS

        states = self.model.encode_bottom(input_ids, mask)
        if mode == "states":
            return {"states": states, TOKEN_IDS: input_ids}, mask
        out = {}
        for j, (k, v) in enumerate(self.model.document_kv(states)):
            out[f"k{j}"] = k.transpose(1, 2).reshape(states.shape)
            out[f"v{j}"] = v.transpose(1, 2).reshape(states.shape)
        return {**out, TOKEN_IDS: input_ids}, mask

    # -- Trainable ----------------------------------------------------------------------------------------------
    def trainable_module(self) -> Any:
        return self.model

    def score_pairs(self, queries: list[str], docs: list[str]) -> Any:
        """Each distinct query's bottom layers run once; its documents cross-attend to its top layers."""
        unique = list(dict.fromkeys(queries))
        position = {q: i for i, q in enumerate(unique)}
        q = self.tokenize(unique, self.mice.query_max_length)
        d = self.tokenize(docs, self.mice.doc_max_length)
        index = self._torch.tensor([position[x] for x in queries], device=self.device)
        logits = self.model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"], index)
        return logits_to_scores(logits)

    def save_checkpoint(self, folder: Path) -> None:
        from micebench.models.mice_io import save_mice

        self.model.mice.trained = True
        save_mice(self.model, self.tokenizer, folder)

    # -- Benchmarkable ------------------------------------------------------------------------------------------
    def bench_call(self, query_ids: Any, doc_ids: Any, mode: str) -> Callable[[], Any]:
        """`none` runs the documents' bottom layers in the call; `states`/`kv` read them from a packed store."""
        from micebench.store.reader import PackedTensors

        torch = self._torch
        q_ids, d_ids = query_ids.to(self.device), doc_ids.to(self.device)
        q_mask, d_mask = torch.ones_like(q_ids), torch.ones_like(d_ids)
        model = self.model
        if mode == "none":

            def call() -> Any:
                with torch.inference_mode():
                    qs = (model.encode_bottom(q_ids, q_mask), q_mask)
                    return self.score_states(qs, d_mask, d_states=model.encode_bottom(d_ids, d_mask))

            return call
        with torch.inference_mode():
            fields, _ = self.store_fields(mode)
            tensors, mask = self.store_encode_ids(d_ids, d_mask, mode)
            packed = {f: tensors[f][mask.bool()].to(self.dtype) for f in fields}
        store = PackedTensors(packed, mask.sum(1).to(self.device))
        rows = torch.arange(len(d_ids), device=self.device)

        def stored_call() -> Any:
            with torch.inference_mode():
                qs = (model.encode_bottom(q_ids, q_mask), q_mask)
                tensors, mask = store.gather(rows)
                return self.score_gathered(qs, tensors, mask, None).cpu().numpy()

        return stored_call

    def bench_modules(self, everything: bool = False) -> list[Any]:
        if everything:
            return [self.model]
        return [self.model.embeddings, *self.model.bottom, *self.model.top]

    def bench_flops(self, query_len: int, doc_len: int, batch: int, mode: str) -> float:
        from micebench.models import flops

        shape = flops.shape_of(self.model.config)
        return flops.mice(query_len, doc_len, shape, self.mice.merge_layer, self.mice.top_layers, batch, mode)

    def bench_tokenize(self, query: str, docs: list[str], mode: str) -> Callable[[], Any] | None:
        if mode == "none":
            return lambda: (self.tokenize([query], self.mice.query_max_length), list(self.doc_batches(docs)))
        return lambda: self.tokenize([query], self.mice.query_max_length)

    def bench_facts(self) -> dict[str, Any]:
        return {"attention": "sdpa"}

    def weight_modules(self) -> list[Any]:
        return [self.model]

    def head_dtype(self) -> Any:
        return modules_dtype(*self.model.head_modules())

    def details(self) -> dict[str, Any]:
        return {
            "mice": asdict(self.mice),
            "attention": "sdpa",
            "batch_size": self.batch_size,
            "oom_backoffs": self.oom_backoffs,
            **self.store_facts(),
        }


def _shape_options(name: str) -> dict[str, Any]:
    k, m = (int(x) for x in _SHAPE.match(name).groups())  # type: ignore[union-attr]
    return {"merge_layer": k, "top_layers": m}


register_ranker_pattern(
    lambda name: bool(_SHAPE.match(name)),
    MiceRanker,
    _shape_options,
    {"mice-l<k>+<m>": "MICE with merge layer k and m top layers (e.g. mice-l4+3)"},
)


def convert_to_checkpoint(
    source: str, folder: str, overwrite: bool = False, seed: int = 0, **options: Any
) -> tuple[str, int, Path]:
    """`micebench convert`: the initial (untrained) MICE of `source` as `run --model mice` would convert it on the
    fly, with the same declared options, written as a normal checkpoint folder; `seed` draws a base model's fresh
    classifier head (and re-initialised top layers), so a conversion is reproducible. Returns (label,
    parameters, folder)."""
    from micebench.atomic import check_can_create
    from micebench.models.mice_io import save_mice

    if Path(folder).exists() and not overwrite:
        raise MicebenchError(f"{folder} already exists (use --overwrite to replace it)")
    check_can_create(folder)
    check_family(source, "ce", reader="convert --from (a cross-encoder or base model)")
    options = ranker_options("mice", **options, checkpoint=source, device="cpu", untrained=True)
    import torch

    torch.manual_seed(seed)
    ranker = MiceRanker(options)
    written = save_mice(ranker.model, ranker.tokenizer, folder)
    return ranker.model.mice.label(), sum(p.numel() for p in ranker.model.parameters()), written
