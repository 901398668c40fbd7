"""Latency tooling: the FLOP model against torch's FLOP counter, the timer against a known sleep, bad input."""

from __future__ import annotations

import csv
import json
import time

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from micebench.errors import MicebenchError
from micebench.latency import load
from micebench.latency.load import CpuReading, LoadMeter, is_busy, machine_busy_seconds, other_load
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
        (["--threads", "0", "--doc-len", "64"], "--threads must be between 1 and"),
        (["--threads", "100000", "--doc-len", "64"], "--threads must be between 1 and"),
    ],
)
def test_latency_bad_input(capsys, tmp_path, tiny_arch, args, message):
    code, _, err = cli(
        capsys, "latency", "--arch", tiny_arch, "--device", "cpu", "--repeats", "1", "-o", str(tmp_path), *args
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "latency").exists()


# -- the machine's load around the timing ----------------------------------------------------------------------

STAT = "cpu  300 100 50 9000 40 5 5 20 7 0\ncpu0 150 50 25 4500 20 3 2 10 7 0\nintr 1 2 3\n"


def test_busy_seconds_count_user_nice_system_irq_softirq_steal_of_the_aggregate_line():
    # 300 user + 100 nice + 50 system + 5 irq + 5 softirq + 20 steal = 480 ticks; idle, iowait and guest are not
    assert machine_busy_seconds(STAT, 100) == pytest.approx(4.8)
    with pytest.raises(ValueError):
        machine_busy_seconds("intr 1 2 3\n", 100)


def test_other_load_is_the_machine_busy_time_less_our_own_over_the_wall_time():
    before, after = CpuReading(100.0, 10.0, 50.0), CpuReading(106.0, 12.0, 52.0)
    assert other_load(before, after) == pytest.approx((6.0 - 2.0) / 2.0)
    assert other_load(before, CpuReading(101.0, 12.0, 52.0)) == 0.0  # clock granularity: never negative
    assert other_load(before, before) == 0.0


@pytest.mark.parametrize(
    ("other", "cores", "threads", "busy"),
    [
        (1.0, 2, 2, True),  # the case: one competing process, every core timed
        (0.2, 2, 2, False),  # an idle machine's background
        (1.0, 2, 1, False),  # the competitor fits on the core left free
        (1.6, 2, 1, True),
        (5.0, 16, 8, False),
        (9.0, 16, 8, True),
    ],
)
def test_busy_when_others_need_more_than_the_free_cores_by_half_a_core(other, cores, threads, busy):
    assert is_busy(other, cores, threads) is busy


def test_load_meter_records_its_readings_and_falls_back_to_the_load_average(monkeypatch):
    readings = iter([CpuReading(0.0, 0.0, 0.0), CpuReading(4.0, 2.0, 1.0)])
    monkeypatch.setattr(load, "read_cpu", lambda: next(readings))
    meter = LoadMeter(cores=2, threads=2)
    meter.start()
    meter.stop()
    assert meter.facts() == {"other_cpu_load": 2.0, "cores": 2, "threads": 2, "busy": True, "method": "/proc/stat"}
    assert "other processes used 2.0 of 2 cores while the models ran on 2 thread(s)" in load.busy_warning(meter.facts())

    monkeypatch.setattr(load, "read_cpu", lambda: None)  # no /proc/stat (macOS)
    monkeypatch.setattr(load.os, "getloadavg", lambda: (3.5, 1.0, 1.0))
    meter = LoadMeter(cores=4, threads=2)
    meter.start()
    meter.stop()
    assert (meter.other, meter.method, meter.busy) == (1.5, "load average", False)


def test_latency_threads_are_recorded_and_a_busy_machine_is_warned_about(capsys, tmp_path, tiny_arch, monkeypatch):
    import os

    cores = os.cpu_count() or 1
    # other processes keep every core busy during the timed calls: (cores + 1) busy s less 1 s of ours, in 1 s
    readings = iter([CpuReading(0.0, 0.0, 0.0), CpuReading(cores + 1.0, 1.0, 1.0)])
    monkeypatch.setattr(load, "read_cpu", lambda: next(readings))
    args = ["--arch", tiny_arch, "--models", "ce", "--batch", "2", "--doc-len", "16", "--query-len", "8"]
    code, out, err = cli(
        capsys, "latency", *args, "--repeats", "1", "--warmup", "0", "--device", "cpu", "--threads", "1",
        "-o", str(tmp_path), "--name", "t",
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((tmp_path / "latency" / "t.json").read_text())["meta"]
    assert meta["config"]["threads"] == 1 and meta["threads"] == 1
    assert meta["load"] == {"other_cpu_load": cores, "cores": cores, "threads": 1, "busy": True, "method": "/proc/stat"}
    assert (
        f"machine busy: other processes used {cores:.1f} of {cores} cores while the models ran on 1 thread(s)"
        in " ".join(out.split())
    )
    with open(tmp_path / "latency" / "t.csv") as handle:
        assert [row["busy"] for row in csv.DictReader(handle)] == ["True"]
