"""Architecture presets for offline latency runs: random weights from a config built in code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from micebench.errors import MicebenchError

#: BERT-family shapes; values from the published config.json of each checkpoint named in the comment
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # microsoft/MiniLM-L12-H384-uncased (and cross-encoder/ms-marco-MiniLM-L12-v2, the paper's cross-encoder)
    "minilm-l12": dict(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=1536,
        vocab_size=30522,
        max_position_embeddings=512,
        type_vocab_size=2,
    ),
    # sentence-transformers/all-MiniLM-L6-v2 (the packaged model)
    "minilm-l6": dict(
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        vocab_size=30522,
        max_position_embeddings=512,
        type_vocab_size=2,
    ),
    # bert-base-uncased (ColBERTv2's backbone)
    "bert-base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        vocab_size=30522,
        max_position_embeddings=512,
        type_vocab_size=2,
    ),
}


def architecture_config(arch: str) -> Any:
    """A transformers config for a preset name, a config.json path, or a folder holding one."""
    from transformers import AutoConfig, BertConfig

    if arch in ARCHITECTURES:
        return BertConfig(**ARCHITECTURES[arch], num_labels=1)
    path = Path(arch).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise MicebenchError(f"{path}: config has no model_type")
        data.setdefault("num_labels", 1)
        return AutoConfig.for_model(model_type, **data)
    raise MicebenchError(f"unknown architecture {arch!r} (presets: {', '.join(ARCHITECTURES)}, or a config.json)")
