"""The per-ranker efficiency table: what each row of the effectiveness table costs.

It joins three measured sources: the run manifests (parameters and end-to-end re-ranking time per query), the
document stores the runs read (bytes per document) and `micebench latency` (model-only GFLOPs, docs/s and peak
memory of the ranker's family in the same mode: from a store, or from the texts).
"""

from __future__ import annotations

import math

import pandas as pd

from micebench.report.collect import Collection

#: `micebench latency` modes that read documents from a store (anything else computes them)
STORE_MODES = ("states", "kv", "precomputed")
COLUMNS = [
    "ranker",
    "family",
    "precision",
    "params (M)",
    "GFLOP/doc",
    "docs/s (model only)",
    "ms/query (end to end)",
    "store KiB/doc",
    "store",
    "peak memory (MB)",
]


def family(model: str, merge_layer: object = None, top_layers: object = None) -> str:
    """The name `micebench latency` times a ranker's architecture under: its model, MICE with its shape."""
    if model == "mice" and _number(merge_layer) and _number(top_layers):
        return f"mice-l{int(merge_layer)}+{int(top_layers)}"  # type: ignore[call-overload]
    return model


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


def store_bytes_per_doc(store: object) -> float:
    """Bytes per document recorded in a store's manifest (NaN when the run read no store or it is gone)."""
    from micebench.errors import MicebenchError
    from micebench.store.manifest import read_manifest

    if not isinstance(store, str) or not store:
        return math.nan
    try:
        return float(read_manifest(store)["bytes_per_doc"])
    except (MicebenchError, KeyError, TypeError, ValueError):
        return math.nan


def stored_sizes(runs: pd.DataFrame) -> list[float]:
    """Bytes per document of the stores a ranker's runs read: as the run recorded it, else from the store."""
    recorded = runs.get("store_bytes_per_doc", pd.Series(math.nan, index=runs.index))
    sizes = [
        float(b) if isinstance(b, int | float) and not pd.isna(b) else store_bytes_per_doc(s)
        for b, s in zip(recorded, runs.get("store", pd.Series(None, index=runs.index)), strict=True)
    ]
    return [b for b in sizes if not math.isnan(b)]


def stored_codecs(runs: pd.DataFrame) -> list[str]:
    """How the stores a ranker's runs read keep their vectors (fp16, int8, pq48, ...): as the run recorded it, else
    from the store's manifest."""
    from micebench.errors import MicebenchError
    from micebench.store.codecs import store_label
    from micebench.store.manifest import read_manifest

    found = set()
    recorded = runs.get("store_codec", pd.Series(None, index=runs.index))
    for codec, store in zip(recorded, runs.get("store", pd.Series(None, index=runs.index)), strict=True):
        if isinstance(codec, str) and codec:
            found.add(codec)
        elif isinstance(store, str) and store:
            try:
                found.add(store_label(read_manifest(store)))
            except (MicebenchError, KeyError, TypeError, ValueError):
                pass
    return sorted(found)


def latency_row(latency: pd.DataFrame, name: str, from_store: bool, precision: str = "fp32") -> pd.Series | None:
    """The latest latency row timing `name` in the same mode (store or texts) and compute precision, preferring
    batch 64."""
    if latency.empty or "label" not in latency:
        return None
    base = latency["label"].astype(str).str.split(":").str[0]
    stored = latency.get("precompute", pd.Series("none", index=latency.index)).isin(STORE_MODES)
    timed_in = latency.get("dtype", pd.Series("fp32", index=latency.index)).fillna("fp32").astype(str)
    rows = latency[(base == name) & (stored == from_store) & (timed_in == precision)]
    if rows.empty:
        return None
    rows = rows.assign(_b64=rows.get("batch", pd.Series(0, index=rows.index)) == 64)
    return rows.sort_values(["_b64", "run"]).iloc[-1]


def ranker_efficiency(collection: Collection, rankers: list[str]) -> pd.DataFrame:
    """One row per ranker (in the given order): cost columns from runs, stores and latency measurements."""
    runs = collection.runs
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for ranker in rankers:
        mine = runs[runs["ranker"] == ranker]
        if mine.empty:
            continue
        first = mine.iloc[0]
        name = family(str(first["model"]), first.get("merge_layer"), first.get("top_layers"))
        known = stored_sizes(mine)
        codecs = stored_codecs(mine)
        from_store = bool(known)
        raw = first.get("precision")
        precision = raw if isinstance(raw, str) and raw else "fp32"
        timed = latency_row(collection.latency, name, from_store, precision)
        params = pd.to_numeric(mine["params"], errors="coerce").dropna()

        def timed_value(key: str, scale: float = 1.0, timed: pd.Series | None = timed) -> float:
            if timed is None or key not in timed or pd.isna(timed[key]):
                return math.nan
            return float(timed[key]) / scale

        rows.append(
            {
                "ranker": ranker,
                "family": name + (" (store)" if from_store else ""),
                "precision": precision,
                "params (M)": round(float(params.iloc[0]) / 1e6, 1) if not params.empty else math.nan,
                "GFLOP/doc": round(timed_value("flops_per_doc", 1e9), 3),
                "docs/s (model only)": round(timed_value("docs_per_s"), 0),
                "ms/query (end to end)": round(float(mine["rerank_ms_per_query"].mean()), 1),
                "store KiB/doc": round(sum(known) / len(known) / 1024, 1) if known else math.nan,
                "store": ", ".join(codecs),
                "peak memory (MB)": round(timed_value("peak_memory_mb"), 0),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def efficiency_caption(collection: Collection) -> str:
    """Where each column comes from, with the latency setting (device, dtype, batch, tokens)."""
    setting = ""
    lat = collection.latency
    if not lat.empty:
        first = lat.iloc[-1]
        parts = [str(first.get(k)) for k in ("device_name", "dtype") if pd.notna(first.get(k))]
        if pd.notna(first.get("batch")):
            parts.append(f"batch {int(first['batch'])}")
        setting = f" ({', '.join(parts)})" if parts else ""
    return (
        "params: the checkpoint as run; precision: the run's compute precision (one row per path); GFLOP/doc, "
        "docs/s and peak memory: `micebench latency`, model only, the family's architecture in the same mode and "
        f"precision{setting}; ms/query: re-ranking time per query of the runs "
        "(end to end: tokenisation or store reads included), mean over the datasets; store KiB/doc and store: the "
        "size and codec of the stores the runs read. – = not measured."
    )
