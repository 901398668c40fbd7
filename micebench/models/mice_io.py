"""MICE checkpoints: build from a cross-encoder, save as config.json (+ "mice") / model.safetensors / tokenizer."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from micebench.errors import DataError, MicebenchError
from micebench.models.hf import (
    classifier_options,
    damaged_checkpoint_file,
    load_pretrained,
    load_weights,
    read_json,
    resolve_model,
)
from micebench.models.masking import encoder_layers
from micebench.models.mice import MiceConfig, MiceModel
from micebench.models.mice_bert import BertMice
from micebench.models.mice_modernbert import ModernBertMice


def is_mice_checkpoint(name: str | None) -> bool:
    """True when `name` is a local folder whose config.json carries MICE fields."""
    if not name:
        return False
    config = Path(resolve_model(name)) / "config.json"
    return config.is_file() and "mice" in read_json(config)


def convert_cross_encoder(checkpoint: str, mice: MiceConfig) -> tuple[MiceModel, Any]:
    """The initial MICE from a cross-encoder (or a base model, which gets a fresh one-logit head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    extra = classifier_options(checkpoint)
    model = load_weights(AutoModelForSequenceClassification, checkpoint, **extra)
    tokenizer = load_pretrained(AutoTokenizer, checkpoint)
    mice.source_checkpoint = mice.source_checkpoint or checkpoint
    return build_mice(model, mice).eval(), tokenizer


def save_mice(model: MiceModel, tokenizer: Any, folder: str | Path) -> Path:
    """Write a shareable checkpoint atomically: config.json with a "mice" entry, model.safetensors, tokenizer."""
    from safetensors.torch import save_file

    from micebench.atomic import atomic_folder

    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        config = model.config.to_dict()
        depth = model.mice.merge_layer + model.mice.top_layers
        config["num_hidden_layers"] = depth
        if isinstance(config.get("layer_types"), list):  # ModernBERT: the kept layers' local/global pattern
            config["layer_types"] = config["layer_types"][:depth]
        config["mice"] = asdict(model.mice)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "micebench": "mice"})
        tokenizer.save_pretrained(str(tmp))
    return folder


def load_mice(folder: str | Path) -> tuple[MiceModel, Any]:
    """Load a checkpoint written by `save_mice` (no download; the architecture comes from config.json)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from micebench.models.checkpoints import check_mice_config, check_tokenizer_files

    folder = Path(resolve_model(str(folder)))
    check_mice_config(folder)
    check_tokenizer_files(folder)
    config = load_pretrained(AutoConfig, str(folder))
    data = config.mice if isinstance(config.mice, dict) else dict(config.mice)
    mice = MiceConfig.from_dict({**data, "random_top_layers": False})
    skeleton = AutoModelForSequenceClassification.from_config(config)
    model = build_mice(skeleton, mice)
    try:
        state = load_file(str(folder / "model.safetensors"))
        _check_state_fits(folder, state, model.state_dict())
        model.load_state_dict(state, strict=True)
    except MicebenchError:
        raise
    except Exception as err:  # safetensors and torch raise several types for damaged or foreign files
        reason = damaged_checkpoint_file(folder) or (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MicebenchError(f"cannot load MICE weights from {folder}: {reason}") from None
    mice.random_top_layers = bool(data.get("random_top_layers", False))
    return model.eval(), load_pretrained(AutoTokenizer, str(folder))


def _check_state_fits(folder: Path, state: dict[str, Any], expected: dict[str, Any]) -> None:
    """The weights of a MICE checkpoint fit the model its config.json describes: the same names, and the same
    shapes (else the config field that sizes them is named)."""
    from micebench.models.checkpoints import shape_mismatch

    mismatched = [
        (name, tuple(state[name].shape), tuple(tensor.shape))
        for name, tensor in expected.items()
        if name in state and tuple(state[name].shape) != tuple(tensor.shape)
    ]
    if mismatched:
        raise shape_mismatch(folder / "config.json", mismatched)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing:
        raise DataError(
            f"damaged checkpoint {folder}: {len(missing)} weight(s) the model needs are missing from "
            f"model.safetensors (e.g. {missing[0]}); they would be random"
        )
    if extra:
        raise DataError(
            f"damaged checkpoint {folder}: model.safetensors holds {len(extra)} weight(s) the model has no place "
            f"for (e.g. {extra[0]})"
        )


def build_mice(source_model: Any, mice: MiceConfig) -> MiceModel:
    """The MICE variant for the source model's backbone (chosen from its config's model_type)."""
    model_type = getattr(source_model.config, "model_type", "")
    if model_type == "modernbert":
        return ModernBertMice(source_model, mice)
    layers = encoder_layers(source_model)
    if not hasattr(source_model.base_model, "embeddings") or not hasattr(layers[0], "attention"):
        raise MicebenchError(
            f"MICE needs a BERT-family or ModernBERT model; {type(source_model).__name__} is not supported"
        )
    return BertMice(source_model, mice)
