"""Encode documents once and write, or extend, a document store for MICE or ColBERT.

What is encoded: the whole corpus (streamed), or only the candidates a first stage returns for the judged
queries (`first_stage`, `top_k`), each document once, in the order the queries meet them. Extending a store skips
the documents it already holds. Before encoding, the store's size is projected from a sample of encoded
documents and the precompute stops when the disk lacks room. A pq or residual store (`codecs.py`) first encodes a
sample of the documents and trains its codebooks on their token vectors (an extension reuses the store's).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micebench.atomic import write_fault
from micebench.data.base import Dataset, chunked
from micebench.errors import EnvironmentFault, MicebenchError
from micebench.models.batching import length_sorted_batches
from micebench.progress import progress_bar
from micebench.store.codecs import CODECS, TOKEN_IDS, CodecSpec, StoreCodec, check_compatible, train_codec
from micebench.store.index import ROW, DocIndex
from micebench.store.manifest import open_index
from micebench.store.shards import SCALE_DTYPE
from micebench.store.writer import StoreWriter

log = logging.getLogger(__name__)

_CHUNK = 4096
#: documents encoded to measure the mean number of stored tokens per document
_SAMPLE = 128
#: storage dtypes `precompute` accepts (pq and residual: compressing codecs, see `codecs.py`)
STORE_DTYPES = ("fp16", "fp32", "bf16", "int8", *CODECS)


def check_positive(**counts: int | None) -> None:
    """One-line error for a count below 1 (`chunk_docs=0` reads as --chunk-docs); None means unset."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise MicebenchError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")


def store_dtype(dtype: str) -> torch.dtype:
    """fp16 | fp32 | bf16 | int8 -> the torch dtype shards hold (a codec's vectors are encoded from fp32)."""
    if dtype not in STORE_DTYPES:
        raise MicebenchError(f"unknown store dtype {dtype!r} (use {', '.join(STORE_DTYPES)})")
    if dtype == "int8":
        return torch.int8
    if dtype in CODECS:
        return torch.float32
    from micebench.models.hf import pick_dtype

    return pick_dtype(dtype)


def human(size: float) -> str:
    """Bytes as a short human-readable figure (KiB, MiB, ...)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@dataclass
class Plan:
    """What a precompute encodes: a stream of (doc id, text), how many, a sample of texts, a manifest record."""

    docs: Callable[[], Iterable[tuple[str, str]]]
    count: int
    sample: list[str]
    record: dict[str, Any] = field(default_factory=dict)
    #: texts a codec's codebooks are trained on (empty without a codec)
    training: list[str] = field(default_factory=list)


def _absent(docs: Iterable[tuple[str, str]], present: DocIndex) -> Iterator[tuple[str, str]]:
    """The documents of a stream that the store does not hold yet (looked up a chunk at a time)."""
    for ids, texts in chunked(docs, _CHUNK):
        absent = set(present.absent(ids))
        yield from ((d, t) for d, t in zip(ids, texts, strict=True) if d in absent)


def corpus_plan(dataset: Dataset, limit: int | None, present: DocIndex | None, train_docs: int = 0) -> Plan:
    """The whole corpus (its first `limit` documents), minus those in `present`: counted in one streaming pass
    (which also draws `train_docs` documents at random, seed 0, for a codec's training)."""

    def docs() -> Iterable[tuple[str, str]]:
        stream = islice(dataset.iter_docs(), limit) if limit else dataset.iter_docs()
        return _absent(stream, present) if present is not None else stream

    count, sample, training = 0, [], []
    rng = np.random.default_rng(0)
    for _, text in docs():
        count += 1
        if len(sample) < _SAMPLE:
            sample.append(text)
        if len(training) < train_docs:
            training.append(text)
        elif train_docs and (slot := int(rng.integers(count))) < train_docs:  # reservoir sampling
            training[slot] = text
    return Plan(docs, count, sample, {"documents": "corpus", "limit": limit}, training)


def candidate_ids(run: dict[str, dict[str, float]]) -> list[str]:
    """Distinct candidates, query by query (ids in order) and by rank: the order a re-ranking reads them."""
    from micebench.data.trec import ranked

    return list(dict.fromkeys(d for qid in sorted(run) for d, _ in ranked(run[qid])))


def candidates_plan(
    dataset: Dataset, spec: str, top_k: int, limit: int | None, present: DocIndex | None, train_docs: int = 0
) -> Plan:
    """The top-`top_k` candidates of first stage `spec` for the judged queries, minus those in `present` (and
    `train_docs` of them, evenly spaced, for a codec's training)."""
    from micebench.firststage.candidates import first_stage
    from micebench.frames import refuse_absent_candidates

    candidates = first_stage(dataset, spec, top_k)
    if candidates.full_corpus:
        return corpus_plan(dataset, limit, present, train_docs)
    ids = candidate_ids(candidates.run)
    wanted = len(ids)
    ids = ids[:limit] if limit else ids
    if present is not None:
        ids = present.absent(ids)
    texts = dataset.doc_texts(ids) if ids else {}
    refuse_absent_candidates(dataset, [d for d in ids if d not in texts])
    step = max(1, len(ids) // _SAMPLE)
    record = {
        "documents": "candidates",
        "first_stage": candidates.source,
        "top_k": top_k,
        "queries": len(candidates.run),
        "candidates": wanted,
        "limit": limit,
    }
    every = max(1, len(ids) // max(train_docs, 1))
    training = [texts[d] for d in ids[::every][:train_docs]] if train_docs else []
    sample = [texts[d] for d in ids[::step][:_SAMPLE]]
    return Plan(lambda: ((d, texts[d]) for d in ids), len(ids), sample, record, training)


@dataclass
class Projection:
    """Projected size of what a precompute adds: documents x tokens per document x bytes per token (+ index)."""

    docs: int
    tokens_per_doc: float
    bytes_per_token: int
    bytes_per_doc_index: int

    @property
    def bytes(self) -> int:
        return int(self.docs * (self.tokens_per_doc * self.bytes_per_token + self.bytes_per_doc_index))

    def describe(self, dtype: str) -> str:
        return (
            f"projected store size: {self.docs:,} documents x {self.tokens_per_doc:.1f} tokens x "
            f"{self.bytes_per_token:,} bytes per token ({dtype}) = {human(self.bytes)}"
        )


def project(
    ranker: Any, mode: str, sample: list[str], docs: int, dtype: torch.dtype, codec: StoreCodec | None = None
) -> Projection:
    """Encode `sample` to measure stored tokens per document and vector sizes, and project `docs` documents."""
    tokens, dims = 0, {}
    for idx in length_sorted_batches(sample, ranker.batch_size):
        tensors, mask = ranker.store_encode([sample[i] for i in idx], mode)
        tokens += int(mask.sum())
        dims = {f: int(t.shape[-1]) for f, t in tensors.items()}
    fields, _ = ranker.store_fields(mode)
    size = torch.empty(0, dtype=dtype).element_size()
    per_token = sum(dims.get(f, 0) * size for f in fields)
    if codec is not None:
        per_token = codec.bytes_per_token()
    elif dtype == torch.int8:
        per_token += len(fields) * torch.empty(0, dtype=SCALE_DTYPE).element_size()
    per_doc_index = 4 + ROW.itemsize + 8 + 16  # lengths, row table, sorted order, a doc id of ~16 bytes
    return Projection(docs, tokens / max(len(sample), 1), per_token, per_doc_index)


def free_space(folder: Path) -> tuple[Path, int]:
    """The nearest existing folder at or above `folder` and the free bytes on its disk."""
    target = folder.resolve()
    while not target.exists() and target != target.parent:
        target = target.parent
    return target, shutil.disk_usage(target).free


def check_room(folder: Path, needed: int) -> None:
    """One-line error when the disk that will hold `folder` has less than `needed` bytes free: a fault of the
    machine (exit status 1), as a disk that fills up while writing."""
    target, free = free_space(folder)
    if needed > free:
        raise EnvironmentFault(
            f"not enough disk space for the store {folder}: it needs about {human(needed)}, "
            f"{human(free)} are free on {target}"
        )


def precompute(
    ranker: Any,
    dataset: Dataset,
    folder: str | Path,
    mode: str,
    dtype: str = "fp16",
    overwrite: bool = False,
    limit: int | None = None,
    resume: bool = False,
    world: Any = None,
    chunk_docs: int = _CHUNK,
    first_stage: str | None = None,
    top_k: int = 100,
    extend: bool = False,
    say: Callable[[str], None] | None = None,
    codec: CodecSpec | None = None,
) -> Path:
    """Build (or with `extend`, add to) the store of `ranker` (MICE in states|kv mode, or ColBERT).

    Without `first_stage` the whole corpus is encoded; with it, only the top-`top_k` candidates of the judged
    queries. `dtype` is fp16, fp32, bf16 or int8 (per-token quantised), or pq / residual with `codec` (its
    sizes; codebooks trained on the store's own vectors, or the extended store's reused). Resumable chunk by
    chunk (`resume`); under torchrun (`world`) chunks are shared round-robin between ranks. `say` receives the
    projected size (rank 0). Returns the store folder (on every rank, once rank 0 has assembled it).
    """
    from micebench.runstate import Distributed

    check_positive(chunk_docs=chunk_docs, limit=limit, batch_size=ranker.batch_size, top_k=top_k)
    world = world or Distributed()
    folder = Path(folder)
    stored = store_dtype(dtype)
    if codec is not None and codec.name != dtype:
        raise MicebenchError(f"the {codec.name} codec's options were given with --dtype {dtype}")
    if codec is None and dtype in CODECS:
        codec = CodecSpec(dtype)
    fields, kind = ranker.store_fields(mode)
    meta = {
        "kind": kind,
        "mode": mode,
        "fingerprint": ranker.store_fingerprint(mode),
        "model": ranker.describe(),
        "dataset": dataset.describe(),
    }
    options = {"first_stage": first_stage, "top_k": top_k if first_stage else None, "limit": limit}
    options["chunk_docs"] = chunk_docs
    if codec is not None:
        options["codec"] = codec.options()
    writer = StoreWriter(
        folder,
        meta,
        fields,
        stored,
        overwrite,
        resume,
        world.rank,
        extend=extend,
        options=options,
        codec_name=codec.name if codec else None,
    )
    present = open_index(folder, writer.base) if writer.base else None
    existing = writer.existing_codec() if codec is not None else None
    if existing is not None:
        check_compatible(codec, existing, folder)
    train_docs = codec.train_docs if codec is not None and existing is None else 0
    with torch.inference_mode():
        if first_stage is None:
            plan = corpus_plan(dataset, limit, present, train_docs)
        else:
            plan = candidates_plan(dataset, first_stage, top_k, limit, present, train_docs)
        if plan.count == 0 and present is None:
            raise MicebenchError(f"dataset {dataset.name!r} has no documents to encode")
        if codec is not None:
            writer.use_codec(*_codec(ranker, mode, fields, plan, codec, existing, writer, world))
            if existing is None and world.rank == 0:
                world.barrier()  # the other ranks read the saved codebooks now
        finished = sum(c["docs"] for c in writer.chunk_records()) if writer.partial.is_dir() else 0
        todo = plan.count - finished
        projection = project(ranker, mode, plan.sample, todo, stored, writer.codec) if plan.count else None
    if world.rank == 0:
        if projection is None:
            (say or log.info)(f"nothing to encode: {folder} already holds every requested document")
        else:
            (say or log.info)(projection.describe(dtype))
            check_room(folder, projection.bytes)
    writer.prepare()
    world.barrier()
    try:
        _encode(ranker, mode, fields, plan, writer, world, chunk_docs)
    except BaseException as error:
        raise _failed(writer, error) from None
    world.barrier()
    if world.rank == 0:
        writer.finish({"dataset": dataset.describe(), **plan.record, "added": plan.count})
    world.barrier()
    return folder


def _codec(
    ranker: Any,
    mode: str,
    fields: list[str],
    plan: Plan,
    spec: CodecSpec,
    existing: StoreCodec | None,
    writer: StoreWriter,
    world: Any,
) -> tuple[StoreCodec, bool]:
    """The codebooks to encode with, and whether they are new (to be saved): the store's own when extending or
    resuming, else trained by rank 0 on the plan's training documents and read back by the other ranks."""
    if existing is not None:
        return existing, False
    if world.rank != 0:
        world.barrier()  # rank 0 trains and saves
        return StoreCodec.load(writer.partial, json.loads((writer.partial / "codec.json").read_text())), False
    texts = plan.training
    if not texts:
        raise MicebenchError(f"no documents to train the {spec.name} codebooks on")
    lengths, packed = encode_chunk(ranker, mode, fields, texts, token_ids=bool(spec.token_means))
    tokens = sum(lengths) / len(lengths) * plan.count
    token_ids = packed.pop(TOKEN_IDS, None)
    trained = train_codec(spec, packed, int(tokens), len(texts), token_ids)
    return trained, True


def encode_chunk(
    ranker: Any, mode: str, fields: list[str], texts: list[str], token_ids: bool = False
) -> tuple[list[int], dict[str, Any]]:
    """Stored tokens per document and the packed (tokens, dim) tensor of each field, documents in `texts` order
    (with `token_ids`, also the (tokens,) token ids under `TOKEN_IDS`, where the ranker gives them).

    Batches are encoded longest first (less padding) and put back in order, so that the documents one query meets
    stay next to each other in the store.
    """
    wanted = [*fields, TOKEN_IDS] if token_ids else fields
    order, lengths, pieces = [], [], {f: [] for f in wanted}
    for idx in length_sorted_batches(texts, ranker.batch_size):
        tensors, mask = ranker.store_encode([texts[i] for i in idx], mode)
        order.extend(idx.tolist())
        lengths.extend(mask.sum(1).tolist())
        keep = mask.bool()
        for f in wanted:
            if f != TOKEN_IDS or f in tensors:  # (a ranker without token ids: the codec refuses it in one line)
                pieces[f].append(tensors[f][keep])  # (tokens, dim), documents back to back
    sorted_lengths = np.asarray(lengths, dtype=np.int64)
    back = np.argsort(np.asarray(order), kind="stable")  # sorted position of each document of `texts`
    starts = (np.cumsum(sorted_lengths) - sorted_lengths)[back]
    length = sorted_lengths[back]
    tokens = np.repeat(starts - (np.cumsum(length) - length), length) + np.arange(int(length.sum()))
    packed = {}
    for f in [f for f, got in pieces.items() if got]:
        flat = torch.cat(pieces[f])
        packed[f] = flat.index_select(0, torch.from_numpy(tokens).to(flat.device))
    return length.tolist(), packed


class BackgroundWriter:
    """Writes shards in a background thread, one at a time, while the next chunk is encoded.

    At most two chunks are held: the one being written and the one being encoded (`submit` first waits for the
    previous shard). A write's error is raised in the caller by the next `submit` or by leaving the block; when the
    block is left on an error of its own, the shard in progress is finished first (it stays resumable) and the
    caller's error is the one raised.
    """

    def __init__(self, writer: StoreWriter):
        self.writer = writer
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="micebench-shard-writer")
        self.pending: Future | None = None

    def _write(self, index: int, ids: list[str], lengths: list[int], packed: dict[str, Any]) -> None:
        """Write one shard (in the writer thread, whose grad mode is its own)."""
        with torch.inference_mode():
            self.writer.write_chunk(index, ids, lengths, {f: [t] for f, t in packed.items()})

    def submit(self, index: int, ids: list[str], lengths: list[int], packed: dict[str, Any]) -> None:
        """Queue chunk `index` for writing once the previous shard is written (raising that shard's error)."""
        self.wait()
        self.pending = self.pool.submit(self._write, index, ids, lengths, packed)

    def wait(self) -> None:
        """Block until the shard in progress is written; raise its error, if any."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        try:
            if kind is None:
                self.wait()
            else:
                try:
                    self.wait()
                except BaseException as late:  # the caller's error is the one to report
                    log.warning("writing the last shard failed too: %s", late)
        finally:
            self.pool.shutdown(wait=True)


def _encode(ranker: Any, mode: str, fields: list[str], plan: Plan, writer: StoreWriter, world: Any, size: int) -> None:
    """Encode the plan's documents chunk by chunk (this rank's chunks not yet recorded) into shards, each shard
    written in the background while the next chunk is encoded."""
    done = writer.done_chunks()
    side = writer.codec is not None and writer.codec.tokens is not None  # the codec reads each token's id
    with (
        torch.inference_mode(),
        progress_bar("precomputing documents", total=plan.count, unit="docs") as bar,
        BackgroundWriter(writer) as background,
    ):
        for index, (ids, texts) in enumerate(chunked(plan.docs(), size)):
            if index % world.world == world.rank and index not in done:
                lengths, packed = encode_chunk(ranker, mode, fields, texts, side)
                background.submit(index, ids, lengths, packed)
            bar.advance(len(ids))


def _failed(writer: StoreWriter, error: BaseException) -> BaseException:
    """The error to raise after a failed precompute: the partial store is kept (and named) only if resumable."""
    writer.discard()
    if isinstance(error, OSError):  # a write outside the writer's own (which wraps them): a machine fault too
        error = write_fault(writer.folder, error)
    if not writer.partial.is_dir():
        return error
    shards = len(writer.done_chunks())
    hint = f"{shards} finished shards are kept in {writer.partial}; rerun with --resume to continue"
    if isinstance(error, MicebenchError):  # keeps its kind: a machine fault still exits 1
        return type(error)(f"{error}; {hint}")
    if isinstance(error, KeyboardInterrupt):
        log.warning(hint)
    else:
        error.add_note(hint)
    return error


def build_store(
    model: str,
    dataset: str,
    options: dict[str, Any],
    mode: str | None = None,
    dtype: str = "fp16",
    output: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    first_stage: str | None = None,
    top_k: int | None = None,
    say: Callable[[str], None] | None = None,
    **build: Any,
) -> Path | None:
    """`micebench precompute`: check every input before the dataset or the model loads, load both, and build the
    store of `model` (default folder results/stores/<dataset>/<label>-<mode>-<dtype>). `build` holds `precompute`'s
    switches (limit, overwrite, resume, chunk_docs, extend, codec). Returns the folder, or None on a torchrun rank
    > 0."""
    from micebench.data import load_dataset
    from micebench.rankers.base import StoreBacked, load_ranker, ranker_options, rankers_with, resolve_ranker
    from micebench.results import slug
    from micebench.runstate import Distributed

    check_positive(
        chunk_docs=build.get("chunk_docs"), batch_size=options.get("batch_size"), limit=build.get("limit"), top_k=top_k
    )
    store_dtype(dtype)
    codec = build.get("codec")
    if codec is not None and codec.name != dtype:
        raise MicebenchError(f"the {codec.name} codec's options were given with --dtype {dtype}")
    if top_k is not None and first_stage is None:
        raise MicebenchError("--top-k applies to --first-stage candidates (without it every document is encoded)")
    cls, _ = resolve_ranker(model)
    if not issubclass(cls, StoreBacked):
        stored = ", ".join(rankers_with(StoreBacked))
        raise MicebenchError(f"model {model!r} has no document store (stores: {stored} and their shapes)")
    device = options.get("device", "auto")
    ranker_options(model, **options)  # every option checked before the dataset or the model loads
    mode = cls.store_mode(mode)
    ds = load_dataset(dataset, data_dir, split)
    world = Distributed.from_env(device)
    ranker = load_ranker(model, **{**options, "device": world.device(device)})
    stored = codec.label() if codec else dtype
    folder = (
        Path(output) if output else Path("results") / "stores" / slug(ds.name) / f"{slug(ranker.label)}-{mode}-{stored}"
    )
    path = precompute(
        ranker,
        ds,
        folder,
        mode,
        dtype,
        world=world,
        first_stage=first_stage,
        top_k=top_k or 100,
        say=say if world.rank == 0 else None,
        **build,
    )
    return path if world.rank == 0 else None
