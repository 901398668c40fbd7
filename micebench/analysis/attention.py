"""Segment attention analysis: how much attention mass flows from each input segment to each other, per layer.

For a token of segment `a`, the mass to segment `b` is the sum of its (head-averaged) attention probabilities
over the tokens of `b`; values are averaged over the tokens of `a`, then over query-document pairs. Each row
therefore sums to 1. This is the measurement the paper's masks were derived from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from micebench.models.segments import PAD, segment_ids
from micebench.progress import progress_bar
from micebench.schedules import SEGMENTS


@dataclass
class SegmentAttention:
    """mass[layer, from, to] averaged over pairs where `from` is present; counts of such pairs per segment."""

    mass: np.ndarray
    pairs: int

    def to_rows(self) -> list[dict[str, Any]]:
        return [
            {"layer": layer, "from": SEGMENTS[a], "to": SEGMENTS[b], "mass": float(self.mass[layer, a, b])}
            for layer in range(self.mass.shape[0])
            for a in range(len(SEGMENTS))
            for b in range(len(SEGMENTS))
        ]


def analysis_device(device: Any) -> Any:
    """Where the float64 sums run: the model's device, except MPS (no float64 there), which falls back to the CPU."""
    import torch

    return torch.device("cpu") if torch.device(device).type == "mps" else torch.device(device)


def host_array(values: Any, dim: int) -> np.ndarray:
    """Sum over `dim` and bring the result to a float64 NumPy array (a CUDA tensor cannot give `.numpy()`)."""
    import torch

    return values.sum(dim).to("cpu", torch.float64).numpy()


def attention_pairs(dataset: Any, first_stage: str, queries: int, docs_per_query: int) -> list[tuple[str, str]]:
    """(query, document) texts to analyse: the first `queries` judged queries in id order, each with its top
    `docs_per_query` first-stage candidates; none at all is one line."""
    from micebench.data.trec import ranked
    from micebench.errors import MicebenchError
    from micebench.firststage.candidates import first_stage as get_candidates

    texts = dataset.judged_queries()
    chosen = sorted(texts)[:queries]
    candidates = get_candidates(dataset, first_stage, docs_per_query).run
    docs = dataset.doc_texts({d for q in chosen for d in candidates.get(q, {})})
    pairs = [(texts[q], docs[d]) for q in chosen for d, _ in ranked(candidates.get(q, {})) if d in docs]
    if not pairs:
        raise MicebenchError("no query-candidate pairs to analyse")
    return pairs


def segment_attention(ranker: Any, pairs: list[tuple[str, str]], batch_size: int = 8) -> SegmentAttention:
    """Measure segment-to-segment attention of a (masked) cross-encoder built with eager attention."""
    import torch

    num_layers = ranker.model.config.num_hidden_layers
    total = np.zeros((num_layers, len(SEGMENTS), len(SEGMENTS)))
    count = np.zeros((len(SEGMENTS),))
    with torch.inference_mode(), progress_bar("attention", total=len(pairs), unit="pairs") as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            batch = ranker.tokenize_pairs([q for q, _ in chunk], [d for _, d in chunk])
            attentions = ranker.forward(batch, output_attentions=True).attentions
            seg = segment_ids(batch["input_ids"], batch["attention_mask"], ranker.tokenizer.sep_token_id)
            seg = seg.to(analysis_device(seg.device))
            onehot = torch.nn.functional.one_hot(seg, PAD + 1)[..., :PAD].double()  # B x L x 5
            tokens = onehot.sum(1)  # B x 5
            present = tokens > 0
            for layer, probs in enumerate(attentions):
                p = probs.to(onehot.device, torch.float64).mean(1)  # head average: B x L x L
                flow = torch.einsum("bia,bij,bjc->bac", onehot, p, onehot)  # summed over tokens
                per_token = flow / tokens.clamp(min=1).unsqueeze(-1)
                total[layer] += host_array(per_token * present.unsqueeze(-1), dim=0)
            count += host_array(present, dim=0)
            bar.advance(len(chunk))
    mass = total / np.maximum(count, 1)[None, :, None]
    return SegmentAttention(mass, len(pairs))


def layer_groups(num_layers: int, group_size: int) -> list[range]:
    return [range(s, min(s + group_size, num_layers)) for s in range(0, num_layers, group_size)]


def plot_heatmaps(result: SegmentAttention, folder: Path, title: str, group_size: int = 3) -> list[Path]:
    """One figure per group of layers (PNG and SVG), one 5x5 heatmap per layer with values written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for group in layer_groups(result.mass.shape[0], group_size):
        fig, axes = plt.subplots(1, len(group), figsize=(3.4 * len(group) + 0.8, 3.6), squeeze=False)
        for ax, layer in zip(axes[0], group, strict=False):
            image = ax.imshow(result.mass[layer], cmap="Greys", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}")
            ax.set_xticks(range(len(SEGMENTS)), SEGMENTS, rotation=45, ha="right")
            ax.set_xlabel("to segment")
            if layer == group[0]:
                ax.set_yticks(range(len(SEGMENTS)), SEGMENTS)
                ax.set_ylabel("from segment")
            else:
                ax.set_yticks(range(len(SEGMENTS)), [])
            for a in range(len(SEGMENTS)):
                for b in range(len(SEGMENTS)):
                    value = result.mass[layer, a, b]
                    ax.text(
                        b,
                        a,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.5 else "black",
                    )
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="attention mass (row sums to 1)")
        fig.suptitle(f"{title}: layers {group[0]}-{group[-1]} ({result.pairs} pairs, head average)", fontsize=10)
        for suffix in ("png", "svg"):
            path = folder / f"attention_layers_{group[0]}-{group[-1]}.{suffix}"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(fig)
    return written


def markdown_table(result: SegmentAttention) -> str:
    """Per layer, a from x to table of attention mass."""
    lines = []
    for layer in range(result.mass.shape[0]):
        lines.append(f"\n**layer {layer}**\n")
        lines.append("| from \\ to | " + " | ".join(SEGMENTS) + " |")
        lines.append("|---" * (len(SEGMENTS) + 1) + "|")
        for a, name in enumerate(SEGMENTS):
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in result.mass[layer, a]) + " |")
    return "\n".join(lines) + "\n"


def write_attention_result(
    result: SegmentAttention, folder: Path, title: str, meta: dict, group_size: int
) -> list[Path]:
    """attention.csv, attention.md, manifest.json and the heatmaps, written into a temporary folder first."""
    from micebench.atomic import atomic_folder

    with atomic_folder(folder) as tmp:
        with open(tmp / "attention.csv", "w", encoding="utf-8") as handle:
            handle.write("layer,from,to,mass\n")
            handle.writelines(f"{r['layer']},{r['from']},{r['to']},{r['mass']:.6f}\n" for r in result.to_rows())
        (tmp / "attention.md").write_text(f"# {title}\n" + markdown_table(result))
        plot_heatmaps(result, tmp, title, group_size)
        (tmp / "manifest.json").write_text(json.dumps({**meta, "status": "complete"}, indent=2, default=str) + "\n")
    return sorted(folder.iterdir())


def analyse_attention(
    model: str,
    dataset: str,
    checkpoint: str | None = None,
    schedule: str | None = None,
    queries: int = 10,
    docs_per_query: int = 2,
    first_stage: str = "auto",
    group_size: int = 3,
    device: str = "auto",
    output: str = "results",
    data_dir: str | None = None,
) -> tuple[int, Path, list[Path]]:
    """`micebench attention`: check the inputs, read the pairs, measure segment attention and write the result
    folder (results/attention/<dataset>/<label>). Returns (pairs, folder, files written)."""
    from micebench.data import load_dataset
    from micebench.errors import MicebenchError
    from micebench.rankers.base import load_ranker, ranker_options, resolve_ranker
    from micebench.rankers.cross_encoder import CrossEncoderRanker
    from micebench.rankers.masked import MaskedCrossEncoderRanker
    from micebench.results import environment, result_dir

    cls, _ = resolve_ranker(model)
    if not issubclass(cls, CrossEncoderRanker):
        raise MicebenchError(
            f"attention analysis needs a cross-encoder model (ce, masked-ce or a preset), not {model!r}"
        )
    for flag, value in (("--queries", queries), ("--docs-per-query", docs_per_query), ("--group-size", group_size)):
        if value < 1:
            raise MicebenchError(f"{flag} must be at least 1 (got {value})")
    ranker_options(model, checkpoint=checkpoint, schedule=schedule, device=device)  # --schedule only for masked-ce
    ds = load_dataset(dataset, data_dir)
    # a plain cross-encoder is read through masked-ce with no rule (identical scores, same hooks for attention)
    spec = model if issubclass(cls, MaskedCrossEncoderRanker) else "masked-ce"
    ranker = load_ranker(spec, checkpoint=checkpoint, schedule=schedule, device=device, attn_implementation="eager")
    pairs = attention_pairs(ds, first_stage, queries, docs_per_query)
    result = segment_attention(ranker, pairs)
    label = model if model != "masked-ce" else f"masked-ce-{ranker.schedule.name}"
    folder = result_dir(Path(output) / "attention", ds.name, label)
    meta = {"dataset": ds.describe(), "ranker": ranker.describe(), "pairs": len(pairs), **environment()}
    files = write_attention_result(result, folder, f"{ds.name} · {label}", meta, group_size)
    return len(pairs), folder, files
