"""`micebench latency`: model-only timing with FLOPs, throughput and memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from micebench.cli.app import app, guide, out
from micebench.cli.flags import with_ranker_flags
from micebench.rankers.options import TIMED

#: declared options `latency` does not offer: it sets them itself under its own flags (--checkpoint, --device,
#: --dtype, --batch, --query-len/--doc-len: the lengths are the measurement), the mode after `:` says whether a
#: store is read, and timing needs no trained weights
LATENCY_LEAVES_OUT = (
    "checkpoint", "device", "dtype", "batch_size", "max_length", "query_max_length", "query_length", "doc_length",
    "precomputed", "untrained",
)  # fmt: skip


@app.command(epilog=guide("latency"))
@with_ranker_flags(owned=LATENCY_LEAVES_OUT, families=TIMED)
def latency(
    models: Annotated[
        str, typer.Option(help="Comma list: ce, mask2, mice-l4+3[:none|states|kv], colbert[:precomputed].")
    ] = ("ce,mice-l4+3:none,mice-l4+3:states,mice-l4+3:kv,colbert:precomputed"),
    batch: Annotated[int, typer.Option(help="Documents per batch, one query (>= 1).")] = 64,
    doc_len: Annotated[
        int, typer.Option(help="Document tokens incl. its [CLS]/[SEP] (3 to the model's positions).")
    ] = 512,
    query_len: Annotated[
        int, typer.Option(help="Query tokens incl. its [CLS]/[SEP] (3 to the model's positions).")
    ] = 32,
    precompute: Annotated[str, typer.Option(help="Default for models without ':mode': none | states | kv.")] = "none",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="Model compute precision: fp32 | fp16 | bf16 | int8 (torchao dynamic int8) | onnx-fp32 | "
            "onnx-int8 (ce on ONNX Runtime), or a comma list to time every model on each path, interleaved."
        ),
    ] = "fp32",
    warmup: Annotated[int, typer.Option(help="Untimed calls per model first (>= 0).")] = 3,
    repeats: Annotated[int, typer.Option(help="Timed calls per model, interleaved (>= 1).")] = 10,
    arch: Annotated[
        str, typer.Option(help="minilm-l12 | minilm-l6 | bert-base | path to a config.json.")
    ] = "minilm-l12",
    checkpoint: Annotated[str | None, typer.Option(help="Real weights instead of a random architecture.")] = None,
    include_tokenization: Annotated[bool, typer.Option(help="Also time tokenisation (reported apart).")] = False,
    paper_setup: Annotated[
        bool, typer.Option(help="The paper's protocol: batch 128, 512 tokens, fp32, tokenisation.")
    ] = False,
    docs_per_query: Annotated[
        int, typer.Option(help="Candidates per query for the per-query latency (documents, >= 1).")
    ] = 1000,
    compile: Annotated[bool, typer.Option(help="torch.compile the cross-encoder.")] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (1 to the logical cores; default: torch's, every core).")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Results root folder.")] = "results",
    name: Annotated[str | None, typer.Option(help="Run name (default: a timestamp).")] = None,
    wide: Annotated[
        bool, typer.Option(help="Also show parameters, GFLOP/doc, GFLOP/s and share of the FLOP ratio.")
    ] = False,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Time rankers model-only (interleaved), with FLOPs, throughput and memory; write results/latency/<run>.*"""
    import time

    from micebench.latency.load import busy_warning
    from micebench.latency.runner import LatencyConfig, measure, write_latency

    paper = LatencyConfig.PAPER_SETUP if paper_setup else {}
    config = LatencyConfig(
        **{
            "models": [m.strip() for m in models.split(",") if m.strip()],
            "batch": batch,
            "query_len": query_len,
            "doc_len": doc_len,
            "precompute": precompute,
            "device": device,
            "dtype": dtype,
            "warmup": warmup,
            "repeats": repeats,
            "arch": arch,
            "checkpoint": checkpoint,
            "include_tokenization": include_tokenization,
            "docs_per_query": docs_per_query,
            "compile": compile,
            "threads": threads,
            "options": dict(model_options or {}),
            **paper,
        }
    )
    from micebench.atomic import check_can_create

    check_can_create(Path(output) / "latency")  # before the timing, not after it
    rows, meta = measure(config)
    from micebench.results import slug

    run = slug(name) if name else time.strftime("%Y%m%d-%H%M%S")  # a name never leaves the latency folder
    json_path, _ = write_latency(rows, meta, Path(output) / "latency", run)
    table = Table(
        title=f"latency · {dtype} · batch {batch} · q{query_len}+d{doc_len} tokens · model only, per batch",
        caption=f"{meta['device_name']}, {meta['threads']} threads; vs ce: against ce in the same precision; every "
        f"column in {json_path.with_suffix('.csv')}",
    )
    columns = ["model", "precision", "median ms", "p10-p90 ms", "docs/s", "vs ce", "FLOP ratio"]
    if wide:
        columns += ["params", "GFLOP/doc", "GFLOP/s", "share", "peak MB"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=column == "model")
    for row in rows:
        cells = {
            "model": row["label"],
            "precision": row["precision"],
            "median ms": f"{row['median_ms']:.1f}",
            "p10-p90 ms": f"{row['p10_ms']:.0f}-{row['p90_ms']:.0f}",
            "docs/s": f"{row['docs_per_s']:.0f}",
            "vs ce": f"{row.get('speedup_vs_ce', float('nan')):.1f}x",
            "FLOP ratio": f"{row.get('flop_ratio_vs_ce', float('nan')):.1f}x",
            "params": f"{row['params'] / 1e6:.1f}M",
            "GFLOP/doc": f"{row['flops_per_doc'] / 1e9:.2f}",
            "GFLOP/s": f"{row['achieved_gflops']:.0f}",
            "share": f"{row.get('share_of_flop_ratio', float('nan')):.0%}",
            "peak MB": "–" if row.get("peak_memory_mb") is None else f"{row['peak_memory_mb']:.0f}",
        }
        table.add_row(*(cells[c] for c in columns))
    out().print(table)
    if meta["load"]["busy"]:
        out().print(f"[yellow]warning:[/] {busy_warning(meta['load'])}")
    if include_tokenization:
        for row in rows:
            if "tokenize_ms" in row:
                out().print(
                    f"{row['label']} ({row['precision']}): tokenisation {row['tokenize_ms']:.1f} ms, "
                    f"total {row['total_ms']:.1f} ms"
                )
    out().print(f"written to {json_path} and .csv")
