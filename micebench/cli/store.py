"""`micebench convert` (a cross-encoder into MICE) and `micebench precompute` (a document store)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from micebench.cli.app import DataDirOption, app, guide, out
from micebench.cli.flags import with_ranker_flags
from micebench.rankers.options import STORE_BACKED

#: MICE's declared options that `convert` does not offer: where the weights come from (--from), the device and
#: dtype it runs in, the batch, a store, and the untrained switch (a converted MICE is untrained by definition)
CONVERT_LEAVES_OUT = ("checkpoint", "device", "dtype", "batch_size", "precomputed", "untrained")


@app.command(epilog=guide("convert"))
@with_ranker_flags(owned=CONVERT_LEAVES_OUT, families=("mice",), required=("merge_layer", "top_layers"))
def convert(
    source: Annotated[str, typer.Option("--from", help="Cross-encoder (or base model) to convert.")],
    out_dir: Annotated[str, typer.Option("--out", help="Folder for the MICE checkpoint.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of a fresh classifier head or re-initialised top layers (integer).")
    ] = 0,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Write the initial (untrained) MICE-l<k>+<m> from a cross-encoder as a normal checkpoint folder (the MICE
    that `run --model mice-l<k>+<m>` converts on the fly from the same weights and options)."""
    from micebench.rankers.mice import convert_to_checkpoint

    label, params, folder = convert_to_checkpoint(source, out_dir, overwrite, seed, **(model_options or {}))
    out().print(f"{label} from {source}: {params / 1e6:.2f}M parameters, written to {folder}")


#: ranker options `precompute` does not take from the model's declaration: --dtype is the storage dtype (the
#: model runs in fp32), the store is written (not read), and a store needs no trained weights
PRECOMPUTE_LEAVES_OUT = ("dtype", "precomputed", "untrained")


@app.command(epilog=guide("precompute"))
@with_ranker_flags(owned=PRECOMPUTE_LEAVES_OUT, families=STORE_BACKED)
def precompute(
    model: Annotated[str, typer.Option("--model", "-m", help="mice, mice-l<k>+<m> or colbert.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose corpus is encoded.")],
    mode: Annotated[
        str | None,
        typer.Option(help="MICE: states (default; layer-k states) or kv (top-layer keys/values); ColBERT: embeddings."),
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            help="Storage dtype: fp16, fp32, bf16, int8 (per-token quantised, about half of fp16), pq (OPQ + product "
            "quantisation, --pq-bytes per token vector) or residual (ColBERTv2's centroid id + --residual-bits per "
            "dimension); pq and residual train their codebooks on the store's own vectors (faiss)."
        ),
    ] = "fp16",
    pq_bytes: Annotated[
        int | None,
        typer.Option(
            help="--dtype pq: bytes per token vector (8-bit codes), >= 1, dividing its size (default size / 8)."
        ),
    ] = None,
    residual_bits: Annotated[int | None, typer.Option(help="--dtype residual: bits per dimension, 1 to 2.")] = None,
    centroids: Annotated[
        int | None, typer.Option(help="--dtype residual: k-means centroids (>= 2; default: ColBERTv2's rule, capped).")
    ] = None,
    train_docs: Annotated[
        int | None,
        typer.Option(help="--dtype pq|residual: documents whose vectors train the codebooks (>= 1; default 1024)."),
    ] = None,
    token_means: Annotated[
        bool,
        typer.Option(
            help="--dtype pq|residual: quantise each vector less its token id's mean vector (side information; "
            "2 more bytes per token), much closer at the same size for MICE's states."
        ),
    ] = False,
    first_stage: Annotated[
        str | None,
        typer.Option(
            help="Encode only the candidates of this first stage for the judged queries (as for `run`: auto, bm25, "
            "dataset:<name>, a run file; full = every document). Default: every document."
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", help="Candidates per query with --first-stage (documents, >= 1; default 100)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="qrels split of a local folder (default: test).")] = None,
    extend: Annotated[
        bool, typer.Option(help="Add the documents the store lacks to an existing store (same model, mode, dtype).")
    ] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Store folder.")] = None,
    limit: Annotated[int | None, typer.Option(help="Encode only the first N documents (>= 1; smoke tests).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild an existing store.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted precompute.")] = False,
    chunk_docs: Annotated[
        int, typer.Option(help="Documents per shard, the unit of resume and of sharding (>= 1).")
    ] = 4096,
    data_dir: DataDirOption = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Encode documents once and store their representations (keyed by doc id) for `run --precomputed`."""
    import time

    from micebench.store.codecs import codec_spec
    from micebench.store.precompute import build_store

    start = time.perf_counter()
    codec = codec_spec(dtype, pq_bytes, residual_bits, centroids, train_docs, token_means=token_means)
    path = build_store(
        model,
        dataset,
        dict(model_options or {}),
        mode,
        dtype,
        output,
        data_dir,
        split,
        first_stage,
        top_k,
        say=out().print,
        limit=limit,
        overwrite=overwrite,
        resume=resume,
        chunk_docs=chunk_docs,
        extend=extend,
        codec=codec,
    )
    if path is None:  # a torchrun rank > 0: rank 0 reports
        return
    from micebench.store.manifest import read_manifest

    manifest = read_manifest(path)
    added = manifest.get("sources", [{}])[-1].get("added", manifest["num_docs"])
    out().print(
        f"{manifest['num_docs']} documents ({added} added), {manifest['num_tokens']} tokens, "
        f"{manifest['bytes_per_doc'] / 1024:.1f} KiB "
        f"per document ({manifest['mode']}, {codec.label() if codec else dtype}) in "
        f"{time.perf_counter() - start:.1f}s (loading included); "
        f"written to {path}"
    )
