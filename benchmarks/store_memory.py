"""Memory and speed of memory-mapped document stores: `python benchmarks/store_memory.py`.

Builds synthetic stores (random fp16 token vectors written with StoreWriter, no model) of 10k and 1M documents,
then measures, each in a fresh process so that its peak RSS is its own:

- peak RSS while gathering (and scoring) 100 queries x 100 candidates drawn uniformly from the whole store, the
  worst case for locality; the goal is that the 1M store stays within 1.5x of the 10k store. Each store starts
  out of the page cache, as `precompute` leaves it; one more row shows the 1M store after a sequential read of
  its files (e.g. a copy), which leaves large page-cache folios that a memory map brings in whole;
- gather speed from warm pages (the same batches gathered once before timing) against the same store loaded whole
  into memory, as format-1 stores were (every shard read, concatenated and cast); the goal is at least 80%.

Stores are kept in --workdir and reused by later runs (about 2 GB for 1M documents of 30 tokens x 32 dims).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KIND, FINGERPRINT = "synthetic", "synthetic-0"


def build_store(folder: Path, docs: int, dim: int, tokens: int, chunk: int = 4096, seed: int = 0) -> Path:
    """A store of `docs` documents of 2/3..4/3 x `tokens` random fp16 vectors of `dim` dims (reused if present)."""
    import torch

    from micebench.store.document_store import StoreWriter, read_manifest

    if (folder / "manifest.json").is_file():
        manifest = read_manifest(folder)
        if manifest["num_docs"] == docs and manifest.get("dim") == dim and manifest.get("format") == 2:
            return folder
    generator = torch.Generator().manual_seed(seed)
    meta = {"kind": KIND, "mode": "states", "fingerprint": FINGERPRINT, "dim": dim}
    writer = StoreWriter(folder, meta, ["states"], torch.float16, overwrite=True)
    low, high = max(1, 2 * tokens // 3), 4 * tokens // 3 + 1
    for index, start in enumerate(range(0, docs, chunk)):
        count = min(chunk, docs - start)
        lengths = torch.randint(low, high, (count,), generator=generator)
        vectors = torch.randn(int(lengths.sum()), dim, generator=generator).half()
        ids = [f"doc{i:07d}" for i in range(start, start + count)]
        writer.write_chunk(index, ids, lengths.tolist(), {"states": [vectors]})
    return writer.finish({"documents": "synthetic"})


def release_store(folder: Path) -> None:
    """Flush the store's files and drop them from the page cache, as the writer leaves them."""
    from micebench.store.shards import release

    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".npy"):
            release(path)


def read_sequentially(folder: Path) -> None:
    """Read every shard start to end, as a copy would (the kernel caches them in large folios)."""
    for path in sorted(folder.glob("shard-*.safetensors")):
        with open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass


def rss_mb() -> tuple[float, float]:
    """Current and peak resident set size of this process, in MB (from /proc/self/status)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def batches(docs: int, queries: int, candidates: int, seed: int = 1) -> list[np.ndarray]:
    """Each query's candidate rows, drawn uniformly from the whole store."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(docs, candidates, replace=False)) for _ in range(queries)]


def child_rss(folder: Path, queries: int, candidates: int) -> dict:
    """Open the store and gather + score every query's candidates; RSS before, after opening, and at peak."""
    import torch

    from micebench.store.document_store import DocumentStore

    torch.set_num_threads(1)
    before = rss_mb()[0]
    start = time.perf_counter()
    store = DocumentStore(folder, KIND, FINGERPRINT, "states", dtype=torch.float32)
    opened = time.perf_counter() - start
    after_open = rss_mb()[0]
    rows = batches(len(store), queries, candidates)
    query = torch.randn(store.manifest["dim"])
    start = time.perf_counter()
    total = 0.0
    for q, picked in enumerate(rows):
        docnos = [f"doc{r:07d}" for r in picked]
        tensors, mask = store.gather(store.positions(docnos))
        scores = (tensors["states"] @ query).masked_fill(mask == 0, float("-inf")).amax(-1)
        total += float(scores.sum()) * (q == 0)
    seconds = time.perf_counter() - start
    now, peak = rss_mb()
    return {
        "docs": len(store),
        "rss_before_open_mb": before,
        "rss_after_open_mb": after_open,
        "rss_end_mb": now,
        "peak_rss_mb": peak,
        "open_s": opened,
        "gather_and_score_s": seconds,
    }


def child_speed(folder: Path, queries: int, candidates: int, repeats: int) -> dict:
    """Seconds per gather of one query's candidates: warm memory-mapped store vs the store loaded whole."""
    import torch
    from safetensors.torch import load_file

    from micebench.store.document_store import DocumentStore, PackedTensors

    torch.set_num_threads(1)
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = [torch.from_numpy(r) for r in batches(manifest["num_docs"], queries, candidates, seed=2)]
    parts = [load_file(str(folder / s["file"])) for s in manifest["shards"]]  # the format-1 way: all in memory
    whole, lengths = torch.cat([p["states"] for p in parts]), torch.cat([p["lengths"] for p in parts])
    del parts
    results = {}
    for dtype in (torch.float16, torch.float32):
        store = DocumentStore(folder, KIND, FINGERPRINT, "states", dtype=dtype)
        packed = PackedTensors({"states": whole.to(dtype)}, lengths)
        mapped = time_gathers(store.gather, rows, repeats)
        memory = time_gathers(packed.gather, rows, repeats)
        got, want = store.gather(rows[0]), packed.gather(rows[0])
        mask = want[1].bool()
        same = bool(torch.equal(got[0]["states"][mask], want[0]["states"][mask]) and torch.equal(got[1], want[1]))
        name = str(dtype).replace("torch.", "")
        results[name] = {"mmap_us": mapped * 1e6, "memory_us": memory * 1e6, "speed_ratio": memory / mapped}
        results[name]["identical"] = same
        del packed
    return results


def time_gathers(gather, rows: list, repeats: int) -> float:
    """Best mean seconds per gather over `repeats` passes, after one pass that warms pages and buffers."""
    for r in rows:
        gather(r)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for r in rows:
            gather(r)
        best = min(best, (time.perf_counter() - start) / len(rows))
    return best


def run_child(*args: str) -> dict:
    """Run this script in a fresh process and return the JSON it prints."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.environ.get("STORE_BENCH_DIR", "/tmp/micebench-store-bench"))
    parser.add_argument("--sizes", default="10000,1000000", help="Store sizes in documents (comma list).")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=30, help="Mean tokens per document.")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=("rss", "speed"), help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "rss":
        print(json.dumps(child_rss(Path(args.store), args.queries, args.candidates)))
        return
    if args.child == "speed":
        print(json.dumps(child_speed(Path(args.store), args.queries, args.candidates, args.repeats)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    stores = {}
    for size in sizes:
        start = time.perf_counter()
        folder = build_store(
            Path(args.workdir) / f"store-{size}-d{args.dim}-t{args.tokens}", size, args.dim, args.tokens
        )
        stores[size] = folder
        manifest = json.loads((folder / "manifest.json").read_text())
        print(
            f"store of {size:,} documents: {manifest['bytes'] / 2**20:,.0f} MiB of shards, "
            f"{manifest['num_tokens'] / size:.1f} tokens/doc, ready in {time.perf_counter() - start:.0f}s",
            flush=True,
        )
    common = ["--queries", str(args.queries), "--candidates", str(args.candidates)]
    rss = {}
    for size in sizes:
        release_store(stores[size])
        rss[size] = run_child("--child", "rss", "--store", str(stores[size]), *common)
    read_sequentially(stores[max(sizes)])
    after_copy = run_child("--child", "rss", "--store", str(stores[max(sizes)]), *common)
    release_store(stores[max(sizes)])
    print(f"\npeak RSS while gathering {args.queries} queries x {args.candidates} candidates (fresh process each):")
    print("| documents | RSS before open MB | after open MB | peak MB | open s | gather+score s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, r in rss.items():
        print(
            f"| {size:,} | {r['rss_before_open_mb']:.0f} | {r['rss_after_open_mb']:.0f} | {r['peak_rss_mb']:.0f} "
            f"| {r['open_s']:.3f} | {r['gather_and_score_s']:.2f} |"
        )
    r = after_copy
    print(
        f"| {max(sizes):,}, after a sequential read | {r['rss_before_open_mb']:.0f} | {r['rss_after_open_mb']:.0f} "
        f"| {r['peak_rss_mb']:.0f} | {r['open_s']:.3f} | {r['gather_and_score_s']:.2f} |"
    )
    small, large = rss[min(sizes)], rss[max(sizes)]
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"peak RSS ratio {max(sizes):,} / {min(sizes):,} documents: {ratio:.2f}x (goal <= 1.5x)")
    extra = (large["peak_rss_mb"] - large["rss_before_open_mb"]) / (small["peak_rss_mb"] - small["rss_before_open_mb"])
    print(f"growth above the interpreter's own RSS: {extra:.2f}x")

    speed = run_child("--child", "speed", "--store", str(stores[max(sizes)]), *common, "--repeats", str(args.repeats))
    print(f"\ngather of {args.candidates} candidates from the {max(sizes):,}-document store, warm pages vs in memory")
    print("(memory-mapped: the same batches gathered once before timing; in memory: every shard loaded and cast)")
    print("| gathered as | memory-mapped us | in memory us | speed mmap / memory | identical |")
    print("|---|---:|---:|---:|---|")
    for name, r in speed.items():
        print(f"| {name} | {r['mmap_us']:.0f} | {r['memory_us']:.0f} | {r['speed_ratio']:.2f} | {r['identical']} |")
    print("(speed ratio = in-memory time / memory-mapped time; goal >= 0.80)")


if __name__ == "__main__":
    main()
