"""Latency tooling: the FLOP model against torch's FLOP counter, the timer against a known sleep, bad input."""

from __future__ import annotations

import json
import time

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from micebench.errors import MicebenchError
from micebench.latency.runner import LatencyBench, LatencyConfig, parse_model
from micebench.latency.timer import Clock, interleaved
from tests.test_cli import cli

TINY = {
    "model_type": "bert",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 30522,
    "max_position_embeddings": 128,
}


# a tiny ModernBERT: gated feed-forward, rotary positions, a local window shorter than the test documents
TINY_MODERNBERT = {
    "model_type": "modernbert",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "vocab_size": 30522,
    "max_position_embeddings": 128,
    "local_attention": 16,
    "global_attn_every_n_layers": 2,
    "pad_token_id": 0,
    "cls_token_id": 101,
    "sep_token_id": 102,
}


@pytest.fixture(scope="module", params=["bert", "modernbert"])
def tiny_arch(request, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("arch") / "config.json"
    path.write_text(json.dumps(TINY if request.param == "bert" else TINY_MODERNBERT))
    return str(path)


@pytest.mark.parametrize(
    "spec",
    [
        "ce",
        "mask2",
        "mice-l2+2:none",
        "mice-l2+2:states",
        "mice-l2+2:kv",
        "mice-l1+3:kv",
        "colbert:none",
        "colbert:precomputed",
    ],
)
@pytest.mark.parametrize("batch", [1, 6])
def test_flop_formula_matches_torch_flop_counter(tiny_arch, spec, batch):
    bench = LatencyBench(
        LatencyConfig(models=[spec], batch=batch, query_len=12, doc_len=40, arch=tiny_arch, device="cpu")
    )
    try:
        model = bench.build(spec)
        # the math SDPA backend decomposes attention into matmuls, which the counter sees on CPU too
        with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            model.call()
        counted = counter.get_total_flops() / batch
        assert counted > 0
        assert abs(model.flops_per_doc - counted) / counted < 0.05, (model.flops_per_doc, counted)
    finally:
        bench.close()


def test_timer_reports_what_it_times():
    clock = Clock("cpu")
    stats = interleaved({"sleep": lambda: time.sleep(0.02), "fast": lambda: None}, clock, warmup=1, repeats=7)
    assert 0.019 <= stats["sleep"].median <= 0.03
    assert stats["fast"].median < 0.005
    summary = stats["sleep"].as_dict()
    assert summary["repeats"] == 7 and summary["p10_ms"] <= summary["median_ms"] <= summary["p90_ms"]


def test_parse_model_modes():
    assert parse_model("mice-l4+3:kv", "none") == ("mice-l4+3", "kv")
    assert parse_model("mice-l4+3", "states") == ("mice-l4+3", "states")
    assert parse_model("ce", "states") == ("ce", "none")
    assert parse_model("colbert:states", "none") == ("colbert", "precomputed")
    with pytest.raises(MicebenchError, match="colbert can be timed with none, precomputed"):
        parse_model("colbert:kv", "none")
    with pytest.raises(MicebenchError, match="ce can be timed with none"):
        parse_model("ce:kv", "none")
    with pytest.raises(MicebenchError, match="unknown model 'bm42'"):
        parse_model("bm42", "none")
    with pytest.raises(MicebenchError, match="cannot be timed by latency"):
        parse_model("bm25", "none")


def test_latency_command_writes_results(capsys, tmp_path, tiny_arch):
    code, out, err = cli(
        capsys,
        "latency",
        "--arch",
        tiny_arch,
        "--models",
        "ce,mice-l2+2:kv,colbert:precomputed",
        "--batch",
        "4",
        "--doc-len",
        "32",
        "--query-len",
        "8",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--include-tokenization",
        "-o",
        str(tmp_path),
        "--name",
        "t",
    )
    assert code == 0, err
    data = json.loads((tmp_path / "latency" / "t.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["ce", "mice-l2+2:kv", "colbert:precomputed"]
    assert data["meta"]["threads"] >= 1 and data["meta"]["dtype"] == "fp32" and "torch" in data["meta"]["versions"]
    assert data["rows"][1]["tokenize_ms"] > 0
    ce, kv, colbert = data["rows"]
    for row in (kv, colbert):  # each ratio is ce's over the row's own, not a constant
        assert row["speedup_vs_ce"] == pytest.approx(ce["median_ms"] / row["median_ms"])
        assert row["flop_ratio_vs_ce"] == pytest.approx(ce["flops_per_doc"] / row["flops_per_doc"])
    # a kv store leaves MICE only its top layers' query side: fewer FLOPs per document than the cross-encoder
    assert kv["flop_ratio_vs_ce"] > 1 and kv["median_ms"] != ce["median_ms"]
    assert (tmp_path / "latency" / "t.csv").read_text().startswith("model,label,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--doc-len", "200"], "exceed the model's maximum of 128 positions"),
        (["--batch", "0", "--doc-len", "64"], "batch must be at least 1"),
        (["--models", "ce,bm42", "--doc-len", "64"], "unknown model 'bm42'"),
        (["--models", "colbert:kv", "--doc-len", "64"], "colbert can be timed with none, precomputed"),
    ],
)
def test_latency_bad_input(capsys, tmp_path, tiny_arch, args, message):
    code, _, err = cli(
        capsys, "latency", "--arch", tiny_arch, "--device", "cpu", "--repeats", "1", "-o", str(tmp_path), *args
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "latency").exists()
