"""Architecture presets for offline latency runs: random weights from a config built in code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from micebench.errors import MicebenchError

#: BERT-family and ModernBERT shapes; values from the published config.json of each checkpoint named in the comment
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

# Ettin encoders (jhu-clsp/ettin-encoder-*, ModernBERT). Shared values, from the config.json of
# jhu-clsp/ettin-encoder-32m: vocabulary 50368 (ModernBERT's tokenizer), 7999 positions, a 128-token local window
# (sliding_window 64 each side), every third layer global, rotary theta 160000 for both layer types, no biases,
# norm eps 1e-5, [CLS]/[SEP]/[PAD] = 50281/50282/50283, mean pooling for sequence classification.
_ETTIN = dict(
    model_type="modernbert",
    vocab_size=50368,
    max_position_embeddings=7999,
    local_attention=128,
    global_attn_every_n_layers=3,
    global_rope_theta=160000.0,
    local_rope_theta=160000.0,
    norm_eps=1e-5,
    norm_bias=False,
    attention_bias=False,
    mlp_bias=False,
    classifier_bias=False,
    hidden_activation="gelu",
    classifier_activation="gelu",
    classifier_pooling="mean",
    cls_token_id=50281,
    sep_token_id=50282,
    pad_token_id=50283,
    bos_token_id=50281,
    eos_token_id=50282,
)
# Per-size shapes: hidden / intermediate / layers / heads of jhu-clsp/ettin-encoder-<size>. 32m: checked against
# its config.json (384 / 576 / 10 / 6). 17m: layers, hidden and heads from the MICE paper's backbone table (7 /
# 256 / 4). 68m and 150m, and every intermediate width except 32m's, follow the Ettin paper's model table
# (intermediate = 1.5 x hidden) and were not checked against those checkpoints' config.json files here.
ARCHITECTURES.update(
    {
        "ettin-17m": dict(_ETTIN, hidden_size=256, intermediate_size=384, num_hidden_layers=7, num_attention_heads=4),
        "ettin-32m": dict(_ETTIN, hidden_size=384, intermediate_size=576, num_hidden_layers=10, num_attention_heads=6),
        "ettin-68m": dict(_ETTIN, hidden_size=512, intermediate_size=768, num_hidden_layers=19, num_attention_heads=8),
        "ettin-150m": dict(
            _ETTIN, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12
        ),
    }
)


def architecture_config(arch: str) -> Any:
    """A transformers config for a preset name, a config.json path, or a folder holding one."""
    from transformers import AutoConfig

    if arch in ARCHITECTURES:
        values = dict(ARCHITECTURES[arch])
        return AutoConfig.for_model(values.pop("model_type", "bert"), **values, num_labels=1)
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
