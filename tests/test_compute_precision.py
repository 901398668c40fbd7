"""Compute precisions on the CPU (`--dtype fp32|bf16|int8`): each family's scores against fp32, the manifest's
record of the path, the one-line refusals, latency's rows per precision with CPU peak memory, and the report's
per-ranker rows joined to the latency of their own precision.

Tolerances come from measurement (tiny BERTs, hidden 32, 2 layers, initialiser range 0.2 so that scores spread;
40 documents, 3 seeds, AMD EPYC): the largest |score - fp32| seen was bf16 0.015 (ce-like), 0.065 (colbert, a sum
over query tokens), 0.003 (dense); int8 0.038 (ce-like), 0.17 (colbert), 0.011 (dense). The bounds below are
about three times those, and the ranking of the documents must stay close (Spearman >= 0.9), so they hold for
any CPU's kernels without asserting bit-level agreement.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from micebench import load_ranker
from micebench.errors import MicebenchError
from tests.conftest import write_beir
from tests.test_cli import cli
from tests.test_precision_and_throughput import QUERY, varied_docs

pytest.importorskip("torchao")

#: family -> (bf16 bound, int8 bound) on max |score - fp32 score|
BOUNDS = {
    "ce": (0.05, 0.12),
    "mask2": (0.05, 0.12),
    "mice-l1+1": (0.05, 0.12),
    "colbert": (0.2, 0.5),
    "dense": (0.01, 0.04),
}
#: Linear layers a 2-layer BERT encoder holds (query, key, value, attention output, intermediate, output)
LINEAR_PER_LAYER = 6


def _tiny(folder: Path, minilm_path: str, head: bool) -> str:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=512, initializer_range=0.2, num_labels=1,
    )  # fmt: skip
    (BertForSequenceClassification if head else BertModel)(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def spread_ce(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    return _tiny(tmp_path_factory.mktemp("spread-ce"), minilm_path, head=True)


@pytest.fixture(scope="module")
def spread_encoder(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    return _tiny(tmp_path_factory.mktemp("spread-encoder"), minilm_path, head=False)


def _load(family: str, checkpoint: str, dtype: str):  # noqa: ANN202
    extra = {"untrained": True} if family.startswith("mice") else {}
    torch.manual_seed(0)  # the same fresh projection or head on every path
    return load_ranker(family, checkpoint=checkpoint, device="cpu", dtype=dtype, batch_size=8, **extra)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


@pytest.mark.parametrize("family", list(BOUNDS))
def test_each_path_scores_like_fp32(family, spread_ce, spread_encoder):
    checkpoint = spread_encoder if family in ("colbert", "dense") else spread_ce
    docs = varied_docs(40)
    fp32 = _load(family, checkpoint, "fp32").score(QUERY, docs)
    for dtype, bound in zip(("bf16", "int8"), BOUNDS[family], strict=True):
        scores = _load(family, checkpoint, dtype).score(QUERY, docs)
        assert np.abs(scores - fp32).max() <= bound, (family, dtype, np.abs(scores - fp32).max())
        if np.ptp(fp32) > 10 * bound:  # scores that spread: the order survives
            assert _spearman(scores, fp32) >= 0.9, (family, dtype)


def test_int8_quantises_the_encoder_and_keeps_the_head_fp32(spread_ce):
    from torchao.utils import TorchAOBaseTensor

    ranker = _load("ce", spread_ce, "int8")
    facts = ranker.describe()
    assert facts["precision"] == "int8" and facts["dtype"] == "float32"
    assert facts["quantized_layers"] == 2 * LINEAR_PER_LAYER  # pooler and classifier (the head) excepted
    assert "torchao" in facts["quantization"] and facts["torchao"]
    layer = ranker.model.bert.encoder.layer[0].intermediate.dense
    assert isinstance(layer.weight, TorchAOBaseTensor)
    for module in (ranker.model.bert.pooler.dense, ranker.model.classifier):
        assert not isinstance(module.weight, TorchAOBaseTensor) and module.weight.dtype == torch.float32


@pytest.mark.parametrize(("native", "label"), [(True, "native"), (False, "emulated")])
def test_bf16_on_the_cpu_records_whether_it_is_native(spread_ce, monkeypatch, native, label):
    import micebench.models.precision as precision

    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: native)
    facts = _load("ce", spread_ce, "bf16").describe()
    assert facts["precision"] == "bf16" and facts["head_dtype"] == "float32"
    assert facts["cpu_bf16"] == label


def test_a_run_records_its_precision_and_keeps_its_own_folder(tmp_path, capsys, spread_ce):
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 3}"} for i in range(6)]
    queries = [{"_id": "q1", "text": "topic one"}, {"_id": "q2", "text": "topic two"}]
    data = write_beir(tmp_path / "small", corpus, queries, [("q1", "d1", 1), ("q2", "d2", 1)])
    out = tmp_path / "r"
    for dtype in ("fp32", "int8"):
        code, _, err = cli(capsys, "run", "--model", "ce", "--checkpoint", spread_ce, "--dataset", str(data),
                           "--device", "cpu", "--dtype", dtype, "-o", str(out))  # fmt: skip
        assert code == 0, err
    manifests = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("manifest.json")}
    name = Path(spread_ce).name
    assert set(manifests) == {f"ce-{name}", f"ce-{name}-int8"}  # fp32 and int8 never share a folder
    int8 = manifests[f"ce-{name}-int8"]
    assert int8["ranker_options"]["dtype"] == "int8"
    assert int8["ranker"]["precision"] == "int8" and int8["ranker"]["quantized_layers"] == 2 * LINEAR_PER_LAYER
    assert manifests[f"ce-{name}"]["ranker"]["precision"] == "fp32"


def test_unknown_precision_is_one_line(tmp_path, capsys, spread_ce):
    code, out, err = cli(capsys, "latency", "--models", "ce", "--checkpoint", spread_ce, "--dtype", "fp32,int4",
                         "--device", "cpu", "-o", str(tmp_path))  # fmt: skip
    known = "fp32, fp16, bf16, int8, onnx-fp32, onnx-int8"
    assert code == 2 and err.strip().splitlines() == [f"error: unknown dtype 'int4' (use {known})"]
    assert not (tmp_path / "latency").exists() or not any((tmp_path / "latency").iterdir())


def test_int8_without_torchao_is_one_line(monkeypatch, spread_ce):
    import sys

    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import fails as if torchao were absent
    with pytest.raises(MicebenchError, match=r"^--dtype int8 needs torchao: pip install 'micebench\[int8\]'"):
        _load("ce", spread_ce, "int8")


def test_peak_rss_counts_only_the_call():
    from micebench.latency.timer import peak_rss_mb

    resident = np.ones(32 * 2**20 // 8)  # resident before the call: not counted
    peak = peak_rss_mb(lambda: np.ones(64 * 2**20 // 8).sum())
    if peak is None:
        pytest.skip("no /proc/self/clear_refs here: CPU peak memory is not measured")
    assert 60 <= peak <= 64 + 16, peak
    assert resident.sum() > 0


def test_latency_times_every_precision_with_ratios_at_equal_precision(spread_ce):
    from micebench.latency.runner import LatencyConfig, measure

    config = LatencyConfig(models=["ce", "mice-l1+1:states"], batch=4, query_len=8, doc_len=24, device="cpu",
                           dtype="fp32,int8", warmup=0, repeats=2, checkpoint=spread_ce)  # fmt: skip
    rows, meta = measure(config)
    assert [(r["label"], r["precision"]) for r in rows] == [
        ("ce", "fp32"), ("mice-l1+1:states", "fp32"), ("ce", "int8"), ("mice-l1+1:states", "int8"),
    ]  # fmt: skip
    for precision in ("fp32", "int8"):
        ce, mice = (r for r in rows if r["precision"] == precision)
        assert mice["speedup_vs_ce"] == pytest.approx(ce["median_ms"] / mice["median_ms"])
    assert all(r["peak_memory_mb"] is None or r["peak_memory_mb"] >= 0 for r in rows)
    assert "VmHWM" in meta["peak_memory"]


def test_report_rows_join_the_latency_of_their_precision():
    from micebench.report.efficiency import latency_row

    latency = pd.DataFrame(
        [
            {"label": "ce", "precompute": "none", "batch": 64, "dtype": "fp32", "docs_per_s": 10.0, "run": "a"},
            {"label": "ce", "precompute": "none", "batch": 64, "dtype": "int8", "docs_per_s": 25.0, "run": "a"},
        ]
    )
    assert latency_row(latency, "ce", False, "int8")["docs_per_s"] == 25.0
    assert latency_row(latency, "ce", False)["docs_per_s"] == 10.0
    assert latency_row(latency, "ce", False, "bf16") is None


# -- ONNX Runtime backend (ce only) -------------------------------------------------------------------------------
def test_ce_on_onnx_runtime_scores_like_fp32(spread_ce):
    """Measured (tiny CE, 40 documents): onnx-fp32 within 1e-7 of torch fp32, onnx-int8 within 0.03."""
    pytest.importorskip("onnxruntime")
    docs = varied_docs(40)
    fp32 = _load("ce", spread_ce, "fp32").score(QUERY, docs)
    exported = _load("ce", spread_ce, "onnx-fp32")
    assert np.abs(exported.score(QUERY, docs) - fp32).max() <= 1e-4
    int8 = _load("ce", spread_ce, "onnx-int8")
    scores = int8.score(QUERY, docs)
    assert np.abs(scores - fp32).max() <= 0.12 and _spearman(scores, fp32) >= 0.9
    facts = int8.describe()
    assert facts["precision"] == "onnx-int8" and facts["backend"].startswith("onnxruntime ")
    assert "head (Gemm)" in facts["quantization"]


@pytest.mark.parametrize("family", ["mask2", "colbert"])
def test_onnx_runtime_is_refused_beyond_ce_in_one_line(family, spread_ce, spread_encoder):
    checkpoint = spread_encoder if family == "colbert" else spread_ce
    with pytest.raises(MicebenchError, match=r"^--dtype onnx-int8 \(ONNX Runtime\) runs the ce family only, not "):
        _load(family, checkpoint, "onnx-int8")


def test_onnx_runtime_missing_is_one_line(monkeypatch, spread_ce):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MicebenchError, match=r"^--dtype onnx-fp32/onnx-int8 needs ONNX Runtime: pip install"):
        _load("ce", spread_ce, "onnx-int8")
