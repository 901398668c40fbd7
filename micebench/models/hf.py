"""Hugging Face plumbing shared by every ranker: model resolution, loading, device and dtype, weight facts.

Numerics live in `models.precision` and batching in `models.batching`; their names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from micebench.errors import MicebenchError, first_line

# re-exported: batching, precision, and model names and JSON files (models.checkpoints, below loading) live apart
from micebench.models.batching import (
    pad_multiple as pad_multiple,
)
from micebench.models.batching import (
    pad_rows as pad_rows,
)
from micebench.models.batching import (
    scores_to_host as scores_to_host,
)
from micebench.models.batching import (
    to_device as to_device,
)
from micebench.models.checkpoints import (
    DEFAULT_CROSS_ENCODER as DEFAULT_CROSS_ENCODER,
)
from micebench.models.checkpoints import (
    SHORT_MODEL_NAMES as SHORT_MODEL_NAMES,
)
from micebench.models.checkpoints import (
    check_missing_weights,
    check_unused_weights,
    config_field,
    json_list_of_objects,
    json_object,
    shape_mismatch,
)
from micebench.models.checkpoints import (
    read_json as read_json,
)
from micebench.models.checkpoints import (
    resolve_model as resolve_model,
)
from micebench.models.precision import (
    TF32_ENV as TF32_ENV,
)
from micebench.models.precision import (
    apply_tf32_choice as apply_tf32_choice,
)
from micebench.models.precision import (
    classifier_head as classifier_head,
)
from micebench.models.precision import (
    dtype_name as dtype_name,
)
from micebench.models.precision import (
    keep_fp32 as keep_fp32,
)
from micebench.models.precision import (
    matmul_precision as matmul_precision,
)
from micebench.models.precision import (
    modules_dtype as modules_dtype,
)
from micebench.models.precision import (
    precision_facts as precision_facts,
)
from micebench.models.precision import (
    quiet_torchao as quiet_torchao,
)
from micebench.models.precision import (
    tf32_requested as tf32_requested,
)

log = logging.getLogger("micebench")


quiet_torchao()  # before any caller's own transformers import (latency's random encoder) loads torchao


def load_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call a transformers `from_pretrained`, turning any failure into one line; for a local checkpoint the line
    names the damaged file (a config that is not JSON, a truncated safetensors file) when there is one."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    quiet_torchao()
    source = resolve_model(name)
    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as err:  # transformers, safetensors and tokenizers each raise their own types
        damaged = damaged_checkpoint_file(Path(source)) if os.path.isdir(source) else None
        if damaged is None and os.path.isdir(source) and "mismatch" in str(err):
            mismatched = _mismatched_weights(loader, source, kwargs)
            if mismatched:
                raise shape_mismatch(Path(source) / "config.json", mismatched) from None
        raise MicebenchError(f"cannot load model {name!r}: {damaged or first_line(err)}") from None


def _mismatched_weights(loader: Any, source: str, kwargs: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, shape in the checkpoint, shape by the config) of the weights transformers refused to load (its report,
    which it only logs, read back by loading once more with the mismatched weights left out)."""
    try:
        _, info = loader.from_pretrained(
            source, **{**kwargs, "ignore_mismatched_sizes": True, "output_loading_info": True}
        )
    except Exception:  # noqa: BLE001 - the first error is reported instead
        return []
    return [(str(k), tuple(a), tuple(b)) for k, a, b in info.get("mismatched_keys", ())]


def damaged_checkpoint_file(folder: Path) -> str | None:
    """The first file of a checkpoint folder that cannot be read and why ("damaged file PATH (reason)"), or None."""
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_bytes())
        except json.JSONDecodeError as err:
            return f"damaged file {path} (not valid JSON: {err.msg} at line {err.lineno} column {err.colno})"
        except (OSError, UnicodeDecodeError) as err:
            return f"damaged file {path} ({err})"
    for path in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            return f"damaged file {path} ({problem})"
    return None


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's framing (its header, or fewer bytes than the header describes)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 0 or 8 + length > size:
            return f"truncated: {size} bytes, shorter than its header"
        try:
            header = json.loads(handle.read(length))
            end = int(max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "unreadable header"
    expected = 8 + length + end
    return f"truncated: {size} of {expected} bytes" if size < expected else None


def read_sentence_transformers_config(name: str) -> dict[str, Any]:
    """max_seq_length, pooling (cls | mean) and normalisation from a sentence-transformers folder, when present."""
    source = resolve_model(name)
    info: dict[str, Any] = {}
    if not os.path.isdir(source):
        return info
    st_config = Path(source) / "sentence_bert_config.json"
    if st_config.is_file():
        info["max_seq_length"] = config_field(json_object(st_config), st_config, "max_seq_length", int, least=1)
    modules = Path(source) / "modules.json"
    if modules.is_file():
        entries = json_list_of_objects(modules)
        info["normalize"] = any(m.get("type", "").endswith("Normalize") for m in entries)
        pooling = next((m for m in entries if m.get("type", "").endswith("Pooling")), None)
        pooling_config = Path(source) / pooling.get("path", "") / "config.json" if pooling else None
        if pooling_config is not None and pooling_config.is_file():
            modes = json_object(pooling_config)
            cls_token = config_field(modes, pooling_config, "pooling_mode_cls_token", bool, default=False)
            info["pooling"] = "cls" if cls_token else "mean"
    return info


def pick_device(device: str = "auto") -> Any:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device that is missing is an error."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MicebenchError(f"device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise MicebenchError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from None


#: compute precisions -> the torch dtype the model's weights are held in (int8 quantises the Linear layers of an
#: fp32 model: `models.precision.quantize_linear_int8`)
DTYPES = {
    "fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32",
    "onnx-fp32": "float32", "onnx-int8": "float32",  # `ce` only: ONNX Runtime runs the exported model (models.onnx)
}  # fmt: skip


def pick_dtype(dtype: str) -> Any:
    """fp32 | fp16 | bf16 | int8 | onnx-fp32 | onnx-int8 -> the torch dtype the weights are held in (float32 for
    int8 and the ONNX Runtime paths)."""
    import torch

    if dtype not in DTYPES:
        raise MicebenchError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    return getattr(torch, DTYPES[dtype])


def classifier_options(checkpoint: str) -> dict[str, Any]:
    """`from_pretrained` options for a sequence-classification model: a checkpoint that is not a classifier
    (e.g. a bi-encoder or base model) gets a fresh single-logit head."""
    from transformers import AutoConfig

    config = load_pretrained(AutoConfig, checkpoint)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    return {} if is_classifier else {"num_labels": 1}


def logits_to_scores(logits: Any) -> Any:
    """Relevance scores from classifier logits: the logit itself, or the log-odds of a 2-label head."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    if logits.shape[-1] == 2:
        return logits[:, 1] - logits[:, 0]
    raise MicebenchError(f"classifier has {logits.shape[-1]} labels; a ranker needs 1 or 2")


def position_limit(config: Any) -> int | None:
    """The most tokens a model reads: its position table (less RoBERTa's padding offset), None when unbounded."""
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):  # positions start after pad
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return positions


def capped_length(requested: int, config: Any, flag: str = "--max-length") -> int:
    """`requested` tokens, capped to the model's position limit with a one-line note (a longer input would fail
    inside the model on the first long document); runs within the limit are unchanged."""
    limit = position_limit(config)
    if limit is not None and requested > limit:
        log.warning("%s %d is beyond the model's %d positions: capped to %d", flag, requested, limit, limit)
        return limit
    return requested


def count_parameters(model: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())


def move_model(model: Any, device: Any, dtype: Any) -> Any:
    """`model.to(device, dtype)` in eval mode, keeping rotary `inv_freq` buffers in fp32.

    Casting those buffers to bf16/fp16 shifts rotary phases (cos off by up to ~0.5 at positions >= 256), which
    changes every ModernBERT score; they are tiny, so they stay fp32 whatever the run dtype.
    """
    keep = {name: buf for name, buf in model.named_buffers() if name.rsplit(".", 1)[-1].endswith("inv_freq")}
    model.to(device, dtype=dtype)
    for name, buf in keep.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        setattr(module, attr, buf.to(device=device, dtype=buf.dtype if buf.is_floating_point() else None))
    return model.eval()


def load_weights(loader: Any, checkpoint: str, read_apart: Collection[str] = (), **kwargs: Any) -> Any:
    """A transformers model from `checkpoint`, with the checkpoint's weights it left unused checked (`read_apart`:
    weights the caller reads itself): an error for a checkpoint micebench wrote for this model, a warning
    otherwise (see `check_unused_weights`)."""
    model, info = load_pretrained(loader, checkpoint, output_loading_info=True, **kwargs)
    check_missing_weights(checkpoint, info["missing_keys"])  # an error first, before any warning
    check_unused_weights(checkpoint, type(model).__name__, info["unexpected_keys"], read_apart)
    model.micebench_missing_keys = tuple(sorted(info.get("missing_keys") or ()))  # drawn afresh, not loaded
    return model


def load_model(loader: Any, checkpoint: str, device: Any, dtype: Any, **kwargs: Any) -> Any:
    """A transformers model from `checkpoint` (weights checked by `load_weights`), on `device` in `dtype`, in eval
    mode (see `move_model`)."""
    return move_model(load_weights(loader, checkpoint, **kwargs), device, dtype)


def weight_fingerprint(header: str, *modules: Any) -> str:
    """A short digest of `header` and every parameter and buffer of `modules`, taken in fp32 on the CPU."""
    import hashlib

    digest = hashlib.sha256(header.encode())
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def model_facts(checkpoint: str | None, device: Any, dtype: Any, *modules: Any) -> dict[str, Any]:
    """The `describe()` fields every model-backed ranker shares: weights, size, device, dtype, attention."""
    first = modules[0]
    config = getattr(first, "config", None)
    return {
        "checkpoint": checkpoint,
        "parameters": sum(count_parameters(m) for m in modules),
        "device": str(device),
        "dtype": dtype_name(dtype),
        "attention": getattr(config, "_attn_implementation", "sdpa"),
    }
