"""Latency of a masked cross-encoder relative to the unmasked one (same weights, batch and lengths).

Masks are additive float tensors handed to the SDPA kernel, so the masked model must not fall back to the
eager attention path. The goal is a ratio <= 1.15. Both models are timed interleaved (A B A B ...) in one
process, mask construction included, and the median ratio is printed.

    python benchmarks/masked_overhead.py --batch 32 --query-len 32 --doc-len 256 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from micebench import load_ranker


def synthetic_batch(tokenizer, batch: int, query_len: int, doc_len: int, seed: int = 0) -> dict:
    """`[CLS] q [SEP] d [SEP]` pairs of exact token lengths, random ids drawn from the ordinary vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    low = max(tokenizer.all_special_ids) + 1
    q = torch.randint(low, tokenizer.vocab_size, (batch, query_len), generator=gen)
    d = torch.randint(low, tokenizer.vocab_size, (batch, doc_len), generator=gen)
    cls = torch.full((batch, 1), tokenizer.cls_token_id)
    sep = torch.full((batch, 1), tokenizer.sep_token_id)
    input_ids = torch.cat([cls, q, sep, d, sep], dim=1)
    token_type_ids = torch.cat([torch.zeros(batch, query_len + 2), torch.ones(batch, doc_len + 1)], 1).long()
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": torch.ones_like(input_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="minilm-l6")
    parser.add_argument("--schedule", default="mask3-l4")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--query-len", type=int, default=32)
    parser.add_argument("--doc-len", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    torch.manual_seed(0)
    plain = load_ranker("ce", checkpoint=args.checkpoint, device=args.device)
    torch.manual_seed(0)
    masked = load_ranker("masked-ce", schedule=args.schedule, checkpoint=args.checkpoint, device=args.device)
    batch = {
        k: v.to(plain.device)
        for k, v in synthetic_batch(plain.tokenizer, args.batch, args.query_len, args.doc_len).items()
    }
    sync = torch.cuda.synchronize if plain.device.type == "cuda" else (lambda: None)

    def timed(ranker) -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            ranker.forward(batch)
        sync()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        timed(plain), timed(masked)
    plain_t, masked_t = [], []
    for _ in range(args.repeats):
        plain_t.append(timed(plain))
        masked_t.append(timed(masked))
    ratios = [m / p for m, p in zip(masked_t, plain_t, strict=True)]
    print(
        f"device={plain.device} threads={torch.get_num_threads()} batch={args.batch} "
        f"lengths=q{args.query_len}+d{args.doc_len} attention={plain.model.config._attn_implementation}"
    )
    print(f"ce        median {statistics.median(plain_t) * 1e3:8.1f} ms/batch")
    print(f"{args.schedule:<9} median {statistics.median(masked_t) * 1e3:8.1f} ms/batch")
    print(
        f"ratio masked/plain: median {statistics.median(ratios):.3f} "
        f"(p10 {sorted(ratios)[len(ratios) // 10]:.3f}, p90 {sorted(ratios)[(9 * len(ratios)) // 10]:.3f}); "
        f"goal <= 1.15"
    )


if __name__ == "__main__":
    main()
