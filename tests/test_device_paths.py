"""Device code paths checked on the CPU: host copies before `.numpy()`, torchrun's process group on the rank's GPU
with a timeout and Gloo barriers, timing and memory on the given GPU, the out-of-memory back-off, shared masks,
and the GPU check script."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from micebench import load_ranker

REPO = Path(__file__).resolve().parent.parent
QUERY = "how do goldfish grow"
DOCS = ["Goldfish grow with the size of their tank.", "Wi-Fi is a family of wireless protocols.", ""]


# -- attention analysis: results come to the host before `.numpy()` ------------------------------------------------
GPU = torch.device("cuda", 0)


def _device_arguments(args: tuple, kwargs: dict) -> list:
    """The device arguments of a `Tensor.to` call (positional or keyword)."""
    return [a for a in (*args, kwargs.get("device")) if isinstance(a, str | torch.device)]


class OnDevice(torch.Tensor):
    """A tensor that acts as if it lived on cuda:0: it reports that device, `.numpy()` refuses it until it is moved to
    the CPU (`.cpu()`, `.to("cpu")`), moving it to cuda:0 keeps it there, and what is computed from it stays there."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if getattr(func, "__self__", None) is torch.Tensor.device:
            return GPU
        if func is torch.Tensor.numpy:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")
        targets = _device_arguments(args[1:], kwargs) if func is torch.Tensor.to else []
        if func is torch.Tensor.cpu or any(torch.device(t).type == "cpu" for t in targets):
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs).as_subclass(torch.Tensor)
        if targets:  # to cuda:0 (where it "is"): keep the dtype change only
            assert all(torch.device(t) == GPU for t in targets), targets
            rest = [a for a in args[1:] if not isinstance(a, str | torch.device)]
            kwargs.pop("device", None)
            return super().__torch_function__(func, types, (args[0], *rest), kwargs) if rest or kwargs else args[0]
        return super().__torch_function__(func, types, args, kwargs)


def test_segment_attention_copies_device_tensors_to_the_host(tiny_bert_ce, monkeypatch):
    from micebench.analysis import attention

    pairs = [(QUERY, d) for d in DOCS]
    plain = load_ranker("masked-ce", checkpoint=tiny_bert_ce, attn_implementation="eager", device="cpu")
    expected = attention.segment_attention(plain, pairs, batch_size=2).mass
    ranker = load_ranker("masked-ce", checkpoint=tiny_bert_ce, attn_implementation="eager", device="cpu")
    forward, segments = ranker.forward, attention.segment_ids

    def forward_on_device(batch, **kwargs):
        output = forward(batch, **kwargs)
        output.attentions = tuple(a.as_subclass(OnDevice) for a in output.attentions)
        return output

    ranker.forward = forward_on_device
    monkeypatch.setattr(attention, "segment_ids", lambda *a: segments(*a).as_subclass(OnDevice))
    got = attention.segment_attention(ranker, pairs, batch_size=2).mass
    assert type(got) is np.ndarray and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_attention_sums_run_on_the_cpu_for_mps():
    from micebench.analysis.attention import analysis_device

    assert analysis_device("mps") == torch.device("cpu") and analysis_device(GPU) == GPU


def test_segment_attention_of_a_bf16_model(tiny_bert_ce):
    from micebench.analysis.attention import segment_attention

    ranker = load_ranker("mask2", checkpoint=tiny_bert_ce, attn_implementation="eager", device="cpu", dtype="bf16")
    mass = segment_attention(ranker, [(QUERY, d) for d in DOCS]).mass
    np.testing.assert_allclose(mass.sum(-1), 1.0, atol=2e-2)
