"""`ModelRanker`: the base of every ranker backed by torch weights.

It owns what each model family used to set up by hand: the checkpoint, device, dtype (with the TF32 choice), batch
size and tokenizer, and `describe`, whose shared facts (weights, size, device, precision) come from the modules a
family names in `weight_modules`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from micebench.errors import MicebenchError
from micebench.models.hf import apply_tf32_choice, load_pretrained, model_facts, pick_device, pick_dtype
from micebench.models.onnx import is_onnx
from micebench.models.precision import compute_facts, is_quantized, precision_facts, quantize_linear_int8
from micebench.rankers.contract import ModelOptions, Ranker, RankerOptions


class ModelRanker(Ranker):
    """A ranker with weights: checkpoint, device, dtype, batch size and tokenizer, set up the same way for all."""

    Options: ClassVar[type[RankerOptions]] = ModelOptions
    #: whether the family can run on ONNX Runtime (`--dtype onnx-fp32|onnx-int8`)
    onnx_backend: ClassVar[bool] = False
    #: the weights' source as given (local folder, short name or hub id)
    checkpoint: str | None
    #: the torch device and dtype the model runs in
    device: Any
    dtype: Any
    #: documents per forward pass (halved by `oom_backoff` on CUDA out of memory)
    batch_size: int
    tokenizer: Any

    def __init__(self, options: ModelOptions, checkpoint: str | None = None):
        super().__init__(options)
        self.checkpoint = options.checkpoint if checkpoint is None else checkpoint
        self.device = pick_device(options.device)
        self.dtype = pick_dtype(options.dtype)
        if is_onnx(options.dtype) and not self.onnx_backend:
            raise MicebenchError(f"--dtype {options.dtype} (ONNX Runtime) runs the ce family only, not {self.name}")
        if is_onnx(options.dtype) and self.device.type != "cpu":
            raise MicebenchError(f"--dtype {options.dtype} runs on the CPU (ONNX Runtime), not on {self.device}")
        #: the compute precision asked for (fp32, fp16, bf16, int8): int8 holds fp32 weights, then `quantize`s
        self.precision = options.dtype
        self.quantized_layers = 0
        apply_tf32_choice(self.device, self.dtype)  # before any model loads: a bad value fails fast
        self.batch_size = int(getattr(options, "batch_size", 1))
        self.oom_backoffs = 0

    def load_tokenizer(self, source: str | None = None) -> None:
        """The Hugging Face tokenizer of `source` (default: the checkpoint)."""
        from transformers import AutoTokenizer

        self.tokenizer = load_pretrained(AutoTokenizer, source or str(self.checkpoint))

    def quantize(self, modules: list[Any], keep: list[Any] = ()) -> None:  # type: ignore[assignment]
        """In an int8 run, quantise the Linear layers of `modules` (not those of `keep`, the scoring head, which
        stays fp32); a no-op in any other precision. Families call it once their weights are on the device."""
        if is_quantized(self.precision):
            self.quantized_layers = quantize_linear_int8(modules, keep)

    @abstractmethod
    def weight_modules(self) -> list[Any]:
        """The torch modules holding the ranker's weights (counted and described in manifests)."""

    def head_dtype(self) -> Any:
        """The dtype the scores are computed in where it is not the run's (an fp32 head); None otherwise."""
        return None

    def details(self) -> dict[str, Any]:
        """Family-specific `describe()` facts, after the shared ones."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Weights, size, device, dtype, attention and precision, then the family's own facts."""
        return {
            "ranker": self.name,
            **model_facts(self.checkpoint, self.device, self.dtype, *self.weight_modules()),
            **precision_facts(self.device, self.dtype, self.head_dtype()),
            **compute_facts(self.device, self.dtype, self.precision, self.quantized_layers),
            **self.details(),
        }
