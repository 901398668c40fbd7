"""The model card (`README.md`) `train` writes into every checkpoint it saves, in the Hugging Face hub's conventions:
a YAML header (`base_model`, `library_name`, `pipeline_tag`, `tags`, `datasets`, `model-index`) that the hub's
`ModelCard` parser reads, then the training recipe, the validation curve and how to load the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from micebench.models.hf import resolve_model

#: hub metric ids of micebench's measure names (model-index `type`)
METRIC_TYPES = {"nDCG@10": "ndcg_at_10", "RR@10": "mrr_at_10"}
#: mean tokens of an MS MARCO passage as stored (TREC DL 2019 corpus, README), for the per-document store cost
PASSAGE_TOKENS = 83
CARD = "README.md"


@dataclass
class CardFacts:
    """What the card reports besides the training configuration."""

    family: str  # the student's ranker family (`mice`, `ce`, ...)
    step: int  # the step of these weights
    value: float | None  # their validation value
    measure: str  # the validation measure (nDCG@10, RR@10)
    validation: str | None  # the validation dataset
    history: list[dict[str, Any]]  # training records: step, loss, lr, validation
    training_set: str  # where the triples came from
    triples: int
    learned: dict[str, Any] | None = None  # training.health's verdict once the run has ended (None: still running)
    compute: str = "fp32"  # the training forward's precision as run ("fp32" or "bf16 autocast")


def _base_model(init: str) -> str | None:
    """The hub id the weights started from (a short name resolved), or None for a local folder."""
    if Path(init).expanduser().exists():
        return None
    resolved = resolve_model(init)
    return None if Path(resolved).exists() else resolved


def store_cost(config: dict[str, Any]) -> str | None:
    """Bytes a document store of a MICE checkpoint costs per stored token and per MS MARCO passage (its
    `config.json`: hidden size, top layers m)."""
    mice = config.get("mice") or {}
    hidden = config.get("hidden_size")
    if not mice or not hidden:
        return None
    m = int(mice.get("top_layers", 0))
    per_token = {"states fp16": 2 * hidden, "states int8": hidden + 4, "kv fp16": 2 * m * 2 * hidden}
    rows = "\n".join(
        f"| {mode} | {size:,} B | {size * PASSAGE_TOKENS / 1024:.1f} KiB |" for mode, size in per_token.items()
    )
    return (
        "A document store (`micebench precompute`) keeps per stored token the layer-k document states (`states`: "
        f"hidden size {hidden} x 2 bytes in fp16; int8: 1 byte each plus a 4-byte scale) or the keys and values of "
        f"the {m} top layer(s) (`kv`: 2m times the fp16 states). Per document that is the stored tokens times:\n\n"
        f"| store | per token | per {PASSAGE_TOKENS}-token passage (MS MARCO mean) |\n|---|---:|---:|\n{rows}"
    )


def card_header(train: dict[str, Any], facts: CardFacts, name: str) -> dict[str, Any]:
    """The YAML header as a dictionary (hub keys, in the hub's order)."""
    header: dict[str, Any] = {}
    base = _base_model(str(train["init"]))
    if base:
        header["base_model"] = base
    header["library_name"] = "transformers" if facts.family == "ce" else "micebench"
    header["pipeline_tag"] = "text-ranking"
    header["tags"] = [
        "micebench",
        "reranker",
        facts.family,
        "cross-encoder" if facts.family != "colbert" else "colbert",
    ]
    header["datasets"] = [d for d in dict.fromkeys([train["train"], facts.validation]) if d]
    if facts.value is not None and facts.validation:
        metric = {"type": METRIC_TYPES.get(facts.measure, facts.measure.lower()), "value": round(facts.value, 4)}
        header["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "text-ranking", "name": "Re-ranking"},
                        "dataset": {"name": facts.validation, "type": facts.validation, "split": "validation"},
                        "metrics": [
                            {
                                **metric,
                                "name": f"{facts.measure} (BM25 top-{train['validate_top_k']}, step {facts.step})",
                            }
                        ],
                    }
                ],
            }
        ]
    return header


def card_text(train: dict[str, Any], facts: CardFacts, checkpoint_config: dict[str, Any], name: str) -> str:
    """The whole card: header, recipe, validation curve, loading, and for MICE what it needs and what a store costs."""
    header = yaml.safe_dump(card_header(train, facts, name), sort_keys=False, allow_unicode=True)
    mice = checkpoint_config.get("mice") or {}
    shape = f"MICE-l{mice.get('merge_layer')}+{mice.get('top_layers')}" if mice else train.get("schedule") or "-"
    teacher = train.get("teacher") or (f"scores file {train['teacher_scores']}" if train.get("teacher_scores") else "")
    recipe = [
        ("family", facts.family),
        ("shape", shape),
        ("initial weights", str(train["init"])),
        ("loss", str(train["loss"])),
        ("teacher", teacher or "none (labels)"),
        ("training set", f"{facts.training_set} ({facts.triples:,} triples)"),
        ("steps", f"{facts.step:,} of {int(train['steps']):,} (these weights)"),
        ("batch", f"{train['batch_size']} triples x {train['grad_accumulation']} accumulation"),
        ("learning rate", f"{train['lr']:g} (AdamW, {train['warmup']} warm-up steps, linear decay)"),
        ("seed", str(train["seed"])),
        ("compute", facts.compute),
    ]
    lines = [
        f"---\n{header}---",
        "",
        f"# {name}",
        "",
        f"A {facts.family} re-ranker trained by distillation or from labels with micebench (`micebench train`).",
        "",
        "## Training recipe",
        "",
        "| | |\n|---|---|",
        *(f"| {k} | {v} |" for k, v in recipe),
        "",
        "## Validation",
        "",
    ]
    curve = [r for r in facts.history if r.get("validation") is not None]
    if curve and facts.validation:
        lines += [
            f"{facts.measure} on {facts.validation} (BM25 top-{train['validate_top_k']}) during training; "
            f"these weights are from step {facts.step} ({facts.value:.4f}).",
            "",
            f"| step | {facts.measure} |\n|---:|---:|",
            *(f"| {r['step']} | {r['validation']:.4f} |" for r in curve),
        ]
    else:
        lines.append("No validation set: these are the final weights.")
    if facts.learned is not None and not facts.learned.get("learned", True):
        lines += [
            "",
            "## Warning: this run did not learn",
            "",
            *(f"- {reason}." for reason in facts.learned.get("reasons", [])),
            "",
            "Do not use these weights as a trained model; see the training guide's convergence rule.",
        ]
    family = facts.family if facts.family != "mice" or not mice else f"mice-l{mice['merge_layer']}+{mice['top_layers']}"
    saved = checkpoint_config.get("micebench_schedule") or {}
    schedule = saved.get("name") if facts.family == "masked-ce" and saved.get("rules") else None
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install micebench",
        "huggingface-cli download REPO_ID --local-dir my-checkpoint   # or use this folder as it is",
        f"micebench run --model {family} --checkpoint my-checkpoint --dataset trec-dl-19",
        "```",
        *(
            [
                "",
                f"The checkpoint carries its attention schedule ({schedule}) in `config.json` "
                "(`micebench_schedule`): `--model masked-ce` scores with it, no `--schedule` needed.",
            ]
            if schedule
            else []
        ),
        "",
        "```python",
        "from micebench.rankers.base import load_ranker",
        f'ranker = load_ranker("{facts.family}", checkpoint="my-checkpoint")',
        'scores = ranker.score("what is a re-ranker", ["a document", "another document"])',
        "```",
    ]
    if mice:
        lines += [
            "",
            "## What MICE needs",
            "",
            "This checkpoint needs micebench: MICE (Minimal Interaction Cross-Encoder) is not a transformers "
            "architecture, and its `config.json` carries the `mice` shape that micebench reads.",
            "",
            store_cost(checkpoint_config) or "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def write_model_card(folder: Path, train: dict[str, Any], facts: CardFacts, name: str) -> Path:
    """Write `README.md` into a checkpoint folder (its `config.json` gives the shape and the hidden size)."""
    config_path = folder / "config.json"
    checkpoint_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    path = folder / CARD
    path.write_text(card_text(train, facts, checkpoint_config, name), encoding="utf-8")
    return path
