"""Device code paths checked on the CPU: host copies before `.numpy()`, torchrun's process group on the rank's GPU
with a timeout and Gloo barriers, timing and memory on the given GPU, the out-of-memory back-off, shared masks,
and the GPU check script."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
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


# -- torchrun: the rank's GPU first, device_id, an explicit timeout, Gloo barriers -----------------------------------
def _device(value) -> torch.device:
    return torch.device("cuda", value) if isinstance(value, int) else torch.device(value)


@pytest.fixture
def fake_dist(monkeypatch):
    """torch.distributed and torch.cuda replaced by recorders (as on a node with GPUs); returns the call list."""
    import torch.distributed as dist

    from micebench import runstate

    calls: list[tuple] = []
    backend: list[str] = []

    def init(backend_name=None, **kwargs):
        backend.append(backend_name)
        calls.append(("init", backend_name, kwargs))

    monkeypatch.setattr(runstate, "_HOST_GROUP", {}, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", _device(d))))
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(backend))
    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend[-1])
    monkeypatch.setattr(dist, "new_group", lambda **kw: calls.append(("new_group", kw)) or "gloo-group")
    monkeypatch.setattr(dist, "barrier", lambda group=None, **kw: calls.append(("barrier", group)))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MICEBENCH_DIST_TIMEOUT_S", "5400")
    return calls


def test_nccl_starts_on_the_ranks_gpu_with_device_id_and_timeout(fake_dist):
    from micebench.runstate import Distributed

    world = Distributed.from_env("auto")
    assert (world.rank, world.world, world.local_rank) == (3, 4, 1)
    assert fake_dist[0] == ("set_device", torch.device("cuda", 1)), "the GPU must be set before the group starts"
    name, backend, kwargs = fake_dist[1]
    assert (name, backend) == ("init", "nccl")
    assert _device(kwargs["device_id"]) == torch.device("cuda", 1)
    assert kwargs["timeout"] == timedelta(seconds=5400)
    assert fake_dist[2] == ("new_group", {"backend": "gloo", "timeout": timedelta(seconds=5400)})
    world.barrier()
    assert fake_dist[-1] == ("barrier", "gloo-group"), "barriers wait on the host (Gloo), not through NCCL"
    assert world.device("auto") == "cuda:1" and world.device("cpu") == "cpu"


def test_cpu_ranks_use_gloo_with_the_timeout(fake_dist):
    from micebench.runstate import Distributed

    world = Distributed.from_env("cpu")
    assert fake_dist[0] == ("init", "gloo", {"timeout": timedelta(seconds=5400)})
    assert not any(call[0] in ("set_device", "new_group") for call in fake_dist)
    world.barrier()
    assert fake_dist[-1] == ("barrier", None)


def test_timeout_default_and_bad_values(monkeypatch):
    from micebench.errors import MicebenchError
    from micebench.runstate import DEFAULT_DIST_TIMEOUT_S, dist_timeout

    monkeypatch.delenv("MICEBENCH_DIST_TIMEOUT_S", raising=False)
    assert dist_timeout() == timedelta(seconds=DEFAULT_DIST_TIMEOUT_S) > timedelta(minutes=10)
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv("MICEBENCH_DIST_TIMEOUT_S", bad)
        with pytest.raises(MicebenchError, match="MICEBENCH_DIST_TIMEOUT_S"):
            dist_timeout()


_LATE_RANK = """
import json, sys, time
from micebench.runstate import Distributed
world = Distributed.from_env("cpu")
if world.rank == 1:  # never reaches the barrier: it is still busy with its share
    time.sleep(float(sys.argv[1]))
    sys.exit(0)
start = time.monotonic()
try:
    world.barrier()
    error = None
except Exception as err:
    error = f"{type(err).__name__}: {err}"
print(json.dumps({"seconds": time.monotonic() - start, "error": error}), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gloo_barrier_gives_up_after_the_configured_timeout():
    """Two real processes: rank 1 is busy for 8 s, rank 0's barrier gives up after the configured 2 s."""
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "MICEBENCH_DIST_TIMEOUT_S": "2",
        "OMP_NUM_THREADS": "1",
    }
    late = subprocess.Popen(
        [sys.executable, "-c", _LATE_RANK, "8"],
        env={**env, "RANK": "1", "LOCAL_RANK": "1"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first = subprocess.run(
            [sys.executable, "-c", _LATE_RANK, "0"],
            env={**env, "RANK": "0", "LOCAL_RANK": "0"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        late.wait(timeout=120)
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["error"] is not None and "Timed out" in result["error"], result
    assert result["seconds"] < 6, result


# -- timing and memory on the GPU that was asked for -----------------------------------------------------------------
def _index(device) -> int | None:
    return None if device is None else _device(device).index


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's timing and memory functions replaced by recorders of the device index they act on."""
    calls: list[tuple] = []
    current: list[int | None] = [None]

    @contextmanager
    def device(d):
        previous, current[0] = current[0], _index(d)
        calls.append(("device", current[0]))
        try:
            yield
        finally:
            current[0] = previous

    class Event:
        def __init__(self, enable_timing=False):
            calls.append(("event", current[0]))

        def record(self, stream=None):
            calls.append(("record", stream))

        def elapsed_time(self, other):
            return 5.0

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d=None: ("stream", _index(d)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("synchronize", _index(d))))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(("reset", _index(d))))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: calls.append(("allocated", _index(d))) or 100)
    monkeypatch.setattr(
        torch.cuda, "max_memory_allocated", lambda d=None: calls.append(("peak", _index(d))) or 100 + 3 * 2**20
    )
    return calls, current


@pytest.mark.parametrize("device", ["cuda:1", torch.device("cuda", 1)])
def test_clock_times_on_the_given_gpu(fake_cuda, device):
    from micebench.latency.timer import Clock

    calls, current = fake_cuda
    ran_on: list[int | None] = []
    seconds = Clock(device).time(lambda: ran_on.append(current[0]))
    assert seconds == pytest.approx(0.005) and ran_on == [1]
    assert [c for c in calls if c[0] == "synchronize"] == [("synchronize", 1)] * 2
    assert [c for c in calls if c[0] == "event"] == [("event", 1)] * 2
    assert [c for c in calls if c[0] == "record"] == [("record", ("stream", 1))] * 2


def test_peak_memory_is_taken_on_the_given_gpu(fake_cuda):
    from micebench.latency.timer import peak_memory_mb

    calls, current = fake_cuda
    ran_on: list[int | None] = []
    assert peak_memory_mb("cuda:1", lambda: ran_on.append(current[0])) == pytest.approx(3.0)
    assert ran_on == [1]
    measured = [c for c in calls if c[0] in ("synchronize", "reset", "allocated", "peak")]
    assert measured and all(index == 1 for _, index in measured), measured
    assert [name for name, _ in measured] == ["synchronize", "reset", "allocated", "synchronize", "peak"]


def test_cpu_clock_needs_no_cuda():
    from micebench.latency.timer import Clock, cuda_device

    assert not Clock("cpu").cuda and not Clock(torch.device("cpu")).cuda
    assert Clock("cpu").time(lambda: None) >= 0.0
    assert cuda_device("cuda:2") == torch.device("cuda", 2) and cuda_device("mps") is None


# -- out-of-memory back-off: leave the except block, release, retry --------------------------------------------------
ALLOC_FAILED = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


class FlakyScorer:
    """Fails its first `failures` calls with a new `make_error()`, holding a tensor of the failed batch in its frame."""

    def __init__(self, make_error: Callable[[], BaseException], failures: int = 1):
        self.batch_size = 8
        self.make_error, self.failures = make_error, failures
        self.raised: list[int] = []  # ids only: a reference to the exception would keep its traceback alive
        self.batches: list[int] = []
        self.failed_batch: weakref.ref | None = None

    def _score(self, docs: list[str]) -> list[float]:
        self.batches.append(self.batch_size)
        if self.failures:
            self.failures -= 1
            activations = torch.ones(self.batch_size, 64)
            self.failed_batch = weakref.ref(activations)
            error = self.make_error()
            self.raised.append(id(error))
            raise error
        return [0.0] * len(docs)


@pytest.fixture
def releases(monkeypatch):
    """Records each gc.collect and empty_cache, with whether an exception was being handled and the failed batch
    was still alive at that moment."""
    events: list[tuple] = []
    collect = gc.collect
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gc, "collect", lambda *a: events.append(("gc", sys.exc_info()[0])) or collect(*a))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append(("empty_cache", sys.exc_info()[0])))
    return events


def _decorated():
    from micebench.rankers.memory import oom_backoff

    class Scorer(FlakyScorer):
        @oom_backoff
        def score(self, docs):
            return self._score(docs)

    return Scorer


def test_cublas_alloc_failure_is_retried_with_half_the_batch(releases, monkeypatch):
    scorer = _decorated()(lambda: RuntimeError(ALLOC_FAILED))
    alive_at_release: list[bool] = []

    def empty_cache():
        releases.append(("empty_cache", sys.exc_info()[0]))
        alive_at_release.append(scorer.failed_batch() is not None)

    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    assert scorer.score(["a", "b"]) == [0.0, 0.0]
    assert scorer.batches == [8, 4] and scorer.batch_size == 4 and scorer.oom_backoffs == 1
    assert [name for name, _ in releases] == ["gc", "empty_cache"]
    assert all(handling is None for _, handling in releases), "memory must be released after the except block"
    assert alive_at_release == [False], "the failed batch's tensors must be gone before empty_cache"


def test_torch_oom_and_plain_out_of_memory_messages_are_retried(releases):
    for error in (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory"), lambda: RuntimeError("out of memory")):
        scorer = _decorated()(error, failures=2)
        assert scorer.score(["a"]) == [0.0]
        assert scorer.batches == [8, 4, 2] and scorer.oom_backoffs == 2


def test_unrelated_runtime_error_propagates_unchanged(releases):
    scorer = _decorated()(lambda: RuntimeError("CUDA error: device-side assert triggered"))
    with pytest.raises(RuntimeError) as raised:
        scorer.score(["a"])
    assert scorer.raised == [id(raised.value)] and scorer.batches == [8] and scorer.batch_size == 8
    assert releases == [] and not hasattr(scorer, "oom_backoffs")


def test_out_of_memory_with_one_document_stops(releases):
    from micebench.errors import MicebenchError

    scorer = _decorated()(lambda: RuntimeError(ALLOC_FAILED), failures=10)
    scorer.batch_size = 1
    with pytest.raises(MicebenchError, match="even with a batch of one document"):
        scorer.score(["a"])


# -- masked cross-encoder: one mask per rule set and own mask, in the model's dtype ---------------------------------
def _received_masks(ranker, docs):
    """The attention mask each encoder layer receives in one forward call (after the schedule's hook)."""
    from micebench.models.masking import encoder_layers

    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        seen.append(kwargs["attention_mask"] if "attention_mask" in kwargs else args[1])

    handles = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in encoder_layers(ranker.model)]
    try:
        with torch.inference_mode():
            ranker.forward(ranker.tokenize_pairs([QUERY] * len(docs), docs))
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_bert_layers_share_one_mask_per_rule_set(tiny_bert_ce, dtype):
    ranker = load_ranker("mask2", checkpoint=tiny_bert_ce, device="cpu", dtype=dtype)
    masks = _received_masks(ranker, DOCS)  # a padded batch: BERT's own padding mask is combined in
    assert len(masks) == 2 and masks[0] is masks[1]
    assert masks[0].dtype == ranker.model.dtype and masks[0].shape[:2] == (len(DOCS), 1)


def test_modernbert_shares_one_mask_per_layer_type(tiny_modernbert_ce):
    ranker = load_ranker("mask2", checkpoint=tiny_modernbert_ce, device="cpu")
    masks = _received_masks(ranker, [*DOCS, "goldfish " * 20])
    assert masks[0] is masks[2] and masks[1] is masks[3] and masks[0] is not masks[1]  # global / sliding window


def test_the_same_rule_set_in_separate_layers_shares_its_mask(tiny_bert_ce):
    from micebench.models.masking import schedule_masks
    from micebench.models.segments import segment_ids
    from micebench.schedules import parse_schedule

    ranker = load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu")
    batch = ranker.tokenize_pairs([QUERY] * len(DOCS), DOCS)
    seg = segment_ids(batch["input_ids"], batch["attention_mask"], ranker.tokenizer.sep_token_id)
    masks = schedule_masks(parse_schedule("document>query@0-1;document>query@2-3"), seg, 3, torch.float32)
    assert masks[0] is masks[2] and masks[0] is not masks[1]


SEGMENTS = ("cls", "query", "sep1", "document", "sep2")
#: (from, to) segment pairs blocked, written out from the rules table of the paper (cumulative)
MASK0 = (
    {(s, "cls") for s in SEGMENTS if s != "cls"}
    | {("document", "sep1"), ("query", "sep2")}
    | {(sep, s) for sep in ("sep1", "sep2") for s in SEGMENTS if s != sep}
)
MASK2 = MASK0 | {("cls", "document"), ("cls", "sep2")} | {("document", "query")}
QUERY_SIDE, DOC_SIDE = ("cls", "query", "sep1"), ("document", "sep2")
PRETTR = {(a, b) for a in QUERY_SIDE for b in DOC_SIDE} | {(b, a) for a in QUERY_SIDE for b in DOC_SIDE}
#: blocked pairs per layer (two layers) of each schedule
BLOCKED = {
    "none": [set(), set()],
    "mask0": [MASK0, MASK0],
    "mask2": [MASK2, MASK2],
    "mask3-l1": [MASK2 | {("query", "document")}, MASK2],
    "prettr-l2": [PRETTR, PRETTR],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(BLOCKED))
def test_masks_block_what_the_paper_lists(tiny_bert_ce, name, dtype):
    """Token by token: a pair is blocked when the paper's rules block its segments, or when the key is padding."""
    from micebench.models.masking import schedule_masks
    from micebench.models.segments import segment_ids
    from micebench.schedules import parse_schedule

    ranker = load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu")
    batch = ranker.tokenize_pairs([QUERY] * len(DOCS), DOCS)
    assert not batch["attention_mask"].all()  # some padding to check
    ids, real = batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    sep = ranker.tokenizer.sep_token_id
    names = []  # each token's segment, by hand: [CLS] q.. [SEP] d.. [SEP] pad..
    for row, keep in zip(ids, real, strict=True):
        seps = [i for i, (t, k) in enumerate(zip(row, keep, strict=True)) if t == sep and k]
        cuts = [(0, "cls"), (seps[0] - 1, "query"), (seps[0], "sep1"), (seps[-1] - 1, "document"), (seps[-1], "sep2")]
        names.append([next((n for last, n in cuts if i <= last), "pad") for i in range(len(row))])
    seg = segment_ids(batch["input_ids"], batch["attention_mask"], sep)
    for layer, mask in enumerate(schedule_masks(parse_schedule(name), seg, 2, dtype)):
        rules = BLOCKED[name][layer]
        blocked = torch.tensor(
            [[[b == "pad" or (a != "pad" and (a, b) in rules) for b in row] for a in row] for row in names]
        )
        expected = torch.zeros(blocked.shape, dtype=dtype).masked_fill_(blocked, torch.finfo(dtype).min)
        assert mask.dtype == dtype and torch.equal(mask, expected.unsqueeze(1))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_shared_masks_leave_scores_unchanged(tiny_bert_ce, monkeypatch, dtype):
    from micebench.models.masking import LayerMasks, combine_masks

    ranker = load_ranker("mask3-l1", checkpoint=tiny_bert_ce, device="cpu", dtype=dtype, batch_size=3)
    docs = [*DOCS, "goldfish " * 40]
    shared = ranker.score(QUERY, docs)
    monkeypatch.setattr(LayerMasks, "combined", lambda self, index, own: combine_masks(self._masks[index], own))
    np.testing.assert_array_equal(ranker.score(QUERY, docs), shared)


# -- the GPU check script, on the CPU ------------------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--arch", "tiny", "--output", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["ranker"], r["dtype"]) for r in rows] == [
        (name, dtype) for name in ("ce", "mask2", "mice-l2+2", "colbert") for dtype in ("fp32", "bf16")
    ]
    for row in rows:
        assert row["finite"] and row["pairs"] == 48 and 1 <= row["distinct_scores"] <= 48
        if row["dtype"] == "fp32":  # the reference itself (on a CPU-only run): it must tell documents apart
            # Random weights give scores within ~1e-3 of each other; mask2's closest pairs differ by 0-8 ulps
            # (AMD EPYC: one exact tie, 47 of 48), so the kernel's rounding decides those. What the check means is
            # that the scores discriminate: a spread, and at most one tie per query of 16 documents.
            assert row["reference_std"] > 0.0 and row["distinct_scores"] >= 48 - 3
        else:
            assert 0.0 < row["max_abs_diff"] < 0.5


def test_gpu_check_merges_every_step_into_one_json(tmp_path):
    (tmp_path / "goals-fp32" / "latency").mkdir(parents=True)
    (tmp_path / "check.json").write_text(json.dumps({"rows": [1]}))
    (tmp_path / "goals-fp32" / "latency" / "goals-1.json").write_text(json.dumps({"rows": [2]}))
    (tmp_path / "steps.tsv").write_text("check\t0\t12\ngoals-fp32\t124\t300\n")
    out = tmp_path / "all.json"
    subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--merge", str(tmp_path), "--output", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    merged = json.loads(out.read_text())
    assert merged["results"] == {"check": {"rows": [1]}, "goals-fp32": {"rows": [2]}}
    assert merged["steps"][1] == {"step": "goals-fp32", "exit_status": 124, "seconds": 300}
