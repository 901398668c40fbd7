"""Numerics of a run: dtype names, an fp32 head inside low-precision models, and TF32 on request."""

from __future__ import annotations

import os
from typing import Any

from micebench.errors import MicebenchError


def quiet_torchao() -> None:
    """Silence torchao's import-time notes (its CUDA-only kernels missing on a CPU build, enum registrations),
    which transformers triggers on every model load once torchao is installed."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def dtype_name(dtype: Any) -> str:
    """`torch.bfloat16` -> "bfloat16" (as manifests record it)."""
    return str(dtype).replace("torch.", "")


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


#: compute precisions that quantise the Linear layers, and the float dtype the rest of the model stays in
QUANTIZED = {"int8": "float32"}
#: what an int8 run does, as manifests record it
INT8_METHOD = (
    "torchao Int8DynamicActivationInt8Weight: Linear layers with int8 weights (per channel) and int8 activations "
    "(per token with a zero point, quantised at run time)"
)


def is_quantized(precision: str) -> bool:
    """Whether the compute precision `precision` (fp32, bf16, int8...) quantises the Linear layers."""
    return precision in QUANTIZED


def quantize_linear_int8(modules: list[Any], keep: list[Any] = ()) -> int:  # type: ignore[assignment]
    """Quantise every `torch.nn.Linear` inside `modules` (those inside `keep`, the scoring head, excepted) to int8
    weights with dynamic int8 activations (torchao, the maintained successor of torch.ao's dynamic quantisation);
    returns how many layers were quantised. Without torchao: one line saying how to install it."""

    import torch

    quiet_torchao()
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        from torchao.quantization.quant_primitives import MappingType
    except ImportError:
        raise MicebenchError(
            "--dtype int8 needs torchao: pip install 'micebench[int8]' (or pip install torchao)"
        ) from None
    kept = {id(m) for module in keep for m in module.modules()}
    count = 0

    def chosen(module: Any, _name: str) -> bool:
        nonlocal count
        take = isinstance(module, torch.nn.Linear) and id(module) not in kept
        count += take
        return take

    # activations quantised per token with a zero point: post-GELU inputs are nearly one-signed, and a symmetric
    # range wastes half its levels on them (on a trained cross-encoder: mean |score - fp32| 0.055 against 0.078)
    config = Int8DynamicActivationInt8WeightConfig(act_mapping_type=MappingType.ASYMMETRIC)
    for module in modules:
        quantize_(module, config, filter_fn=chosen)
    return count


def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX on x86, BF16 on Arm), so that a bf16 run is
    fast; without it torch emulates bf16 (correct, but slower than fp32)."""
    import torch

    probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    try:
        with open("/proc/cpuinfo") as info:
            flags = set(info.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def compute_facts(device: Any, dtype: Any, precision: str, quantized_layers: int = 0) -> dict[str, Any]:
    """The `describe()` fields on the compute precision: `precision` (fp32, bf16, int8...), how int8 quantises,
    and for a bf16 run on the CPU whether the CPU computes bf16 natively."""
    import torch

    facts: dict[str, Any] = {"precision": precision}
    if is_quantized(precision):
        facts["quantization"] = INT8_METHOD
        facts["quantized_layers"] = quantized_layers
        try:
            from importlib.metadata import version

            facts["torchao"] = version("torchao")
        except Exception:  # noqa: BLE001 - a version is a fact, not a requirement
            pass
    if torch.device(device).type == "cpu" and dtype == torch.bfloat16:
        facts["cpu_bf16"] = "native" if cpu_bf16_native() else "emulated"
    return facts
