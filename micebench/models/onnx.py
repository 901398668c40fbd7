"""An ONNX Runtime backend for sequence classifiers (`ce --dtype onnx-int8`): the loaded torch model exported to
ONNX, optionally dynamically quantised to int8, and run by an ONNX Runtime CPU session."""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from typing import Any

from micebench.errors import MicebenchError

#: compute precisions served by ONNX Runtime instead of torch
ONNX_PRECISIONS = ("onnx-fp32", "onnx-int8")
#: what an onnx-int8 run does, as manifests record it
ONNX_INT8_METHOD = (
    "ONNX Runtime quantize_dynamic: MatMul weights int8 per output channel, activations uint8 quantised at run "
    "time; the head (Gemm) and embeddings stay fp32"
)


def is_onnx(precision: str) -> bool:
    """Whether the compute precision `precision` runs on ONNX Runtime."""
    return precision in ONNX_PRECISIONS


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MicebenchError("--dtype onnx-fp32/onnx-int8 needs ONNX Runtime: pip install 'micebench[onnx]'") from None
    return onnxruntime


class OnnxClassifier:
    """A transformers sequence classifier exported to ONNX (and quantised for onnx-int8), called like the model on
    a tokenised batch; returns the logits as a torch tensor."""

    def __init__(self, model: Any, example: dict[str, Any], precision: str, threads: int):
        ort = _runtime()
        import torch

        self._torch = torch
        self._folder = tempfile.TemporaryDirectory(prefix="micebench-onnx-")
        path = f"{self._folder.name}/model.onnx"
        signature = list(inspect.signature(model.forward).parameters)
        self.inputs = sorted(example, key=signature.index)  # the exporter names inputs in forward's order
        batch = {name: example[name] for name in self.inputs}
        batch["attention_mask"] = batch["attention_mask"].clone()
        batch["attention_mask"][-1, -1] = 0  # traced with padding: from an unpadded batch the mask would be dropped
        attention = model.config._attn_implementation
        model.set_attn_implementation("eager")  # SDPA's padding mask does not survive the TorchScript trace
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
                torch.onnx.export(
                    model,
                    (),
                    path,
                    kwargs=batch,
                    input_names=self.inputs,
                    output_names=["logits"],
                    dynamic_axes={name: {0: "batch", 1: "tokens"} for name in self.inputs},
                    dynamo=False,
                )
        except Exception as err:  # noqa: BLE001 - any exporter failure is one line
            raise MicebenchError(f"cannot export the model to ONNX: {str(err).splitlines()[0]}") from None
        finally:
            model.set_attn_implementation(attention)
        if precision == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = f"{self._folder.name}/model-int8.onnx"
            import onnx

            # the head (pooler, classifier: Gemm nodes, which the quantiser first turns into `<name>_MatMul`) stays fp32
            gemms = [node.name for node in onnx.load(path).graph.node if node.op_type == "Gemm"]
            head = [*gemms, *(f"{name}_MatMul" for name in gemms)]
            root = logging.getLogger()
            level = root.level
            root.setLevel(max(level, logging.ERROR))  # its pre-processing advice, logged to the root logger
            try:
                # per-channel weights: on a trained cross-encoder half the score error of per-tensor ones (mean
                # |score - fp32| 0.19 against 0.40, all-MiniLM-L6-v2 fine-tuned on SciFact) at the same speed
                quantize_dynamic(
                    path,
                    quantized,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"],
                    nodes_to_exclude=head,
                    per_channel=True,
                )
            finally:
                root.setLevel(level)  # micebench's own warnings propagate to the root logger
            path = quantized
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.onnxruntime = ort.__version__

    def __call__(self, batch: dict[str, Any]) -> Any:
        """Logits of a tokenised host batch (a torch tensor on the CPU)."""
        feed = {name: batch[name].cpu().numpy() for name in self.inputs}
        return self._torch.from_numpy(self.session.run(None, feed)[0])
