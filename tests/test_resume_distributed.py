"""Runs that survive: SIGKILL then --resume gives a byte-identical run file; torchrun shards give the same."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli import cli


def _command(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        "ce",
        "--checkpoint",
        "minilm-l6",
        "--dataset",
        str(data_dir / "adi"),
        "--first-stage",
        "bm25",
        "--top-k",
        "20",
        "--device",
        "cpu",
        "--max-length",
        "256",
        "--untrained",  # the packaged bi-encoder has no trained score head: a fresh one from the seed
        "-o",
        str(out),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_sigkill_then_resume_is_byte_identical(tmp_path, data_dir):
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "micebench", *_command(data_dir, reference)],
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "micebench", *_command(data_dir, killed, "--chunk-queries", "2")],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    progress = killed / "adi" / ".ce-model.partial" / "scores-rank0.tsv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if progress.is_file() and progress.read_text().count("#END") >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "adi" / "ce-model" / "run.trec").exists(), "the run finished before it could be killed"
    assert progress.read_text().count("#END") < 18
    # a plain re-run refuses to clobber the progress; --resume with another configuration is refused too
    code = subprocess.run(
        [sys.executable, "-m", "micebench", *_command(data_dir, killed, "--chunk-queries", "2")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert code.returncode == 2 and "use --resume" in code.stderr
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "micebench",
            *_command(data_dir, killed, "--chunk-queries", "2", "--top-k", "10", "--resume"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert other.returncode == 2 and "another configuration" in other.stderr
    subprocess.run(
        [sys.executable, "-m", "micebench", *_command(data_dir, killed, "--chunk-queries", "2", "--resume")],
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    a = (reference / "adi" / "ce-model" / "run.trec").read_bytes()
    b = (killed / "adi" / "ce-model" / "run.trec").read_bytes()
    assert a == b and len(a) > 0
    assert not (killed / "adi" / ".ce-model.partial").exists()


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, data_dir):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    one = tmp_path / "one"
    subprocess.run(
        [sys.executable, "-m", "micebench", *_command(data_dir, one)],
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    two = tmp_path / "two"
    result = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-port", "29517", "-m", "micebench", *_command(data_dir, two)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (one / "adi" / "ce-model" / "run.trec").read_bytes() == (two / "adi" / "ce-model" / "run.trec").read_bytes()
    import json

    manifest = json.loads((two / "adi" / "ce-model" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert (one / "adi" / "ce-model" / "metrics.json").read_text() == (
        two / "adi" / "ce-model" / "metrics.json"
    ).read_text()


def test_lock_refuses_a_second_writer(tmp_path):
    from micebench.errors import MicebenchError
    from micebench.runstate import ResultLock

    folder = tmp_path / "r" / "ds" / "ce"
    with ResultLock(folder), pytest.raises(MicebenchError, match="another process is writing"):
        with ResultLock(folder):
            pass
    with ResultLock(folder):  # released
        pass


def test_partial_progress_ignores_a_chunk_cut_by_a_crash(tmp_path):
    from micebench.runstate import PartialScores

    partial = PartialScores(tmp_path / "ds" / "ce", "h")
    partial.check(False, False)
    partial.create()
    partial.append([("q1", "d1", 0.5), ("q1", "d2", 0.25)])
    with open(partial.folder / "scores-rank0.tsv", "a") as handle:
        handle.write("q2\td1\t0.1\nq2\td2")  # the process died here
    assert partial.done() == {"q1"} and partial.finished_run() == {"q1": {"d1": 0.5, "d2": 0.25}}


def test_resume_without_progress_runs_normally_and_says_so(capsys, caplog, tmp_path, data_dir):
    code, _, err = cli(
        capsys, "run", "--model", "bm25", "--dataset", str(data_dir / "adi"), "-o", str(tmp_path), "--resume"
    )
    assert code == 0, err
    assert f"--resume: no unfinished run of {tmp_path / 'adi' / 'bm25'} to continue" in caplog.text


def test_oom_halves_the_batch_and_records_it(tiny_bert_ce):
    """A fake CUDA OOM above 2 documents per batch: scores unchanged, final batch size reported."""
    import numpy as np
    import torch

    from micebench import load_ranker

    docs = [f"goldfish tank number {i}" for i in range(7)]
    ranker = load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu", batch_size=8)
    expected = ranker.score("goldfish", docs)
    original = ranker.forward

    def flaky(batch, **kwargs):
        if batch["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("fake")
        return original(batch, **kwargs)

    ranker.forward = flaky
    np.testing.assert_allclose(ranker.score("goldfish", docs), expected, atol=1e-6)
    assert ranker.describe()["batch_size"] == 2 and ranker.describe()["oom_backoffs"] == 2


def test_datasets_check_finds_every_problem(capsys, tmp_path):
    from tests.conftest import write_beir

    docs = [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}, {"_id": "d2", "text": ""}]
    folder = write_beir(tmp_path / "bad", docs, [{"_id": "q1", "text": " "}], [("q1", "d1", 1), ("q9", "d7", 1)])
    with open(folder / "corpus.jsonl", "ab") as handle:
        handle.write(b'{"_id": "d3", "text": "caf\\xe9"}\n'.replace(b"\\xe9", b"\xe9"))
        handle.write(b"{oops\n")
    (folder / "candidates").mkdir()
    (folder / "candidates" / "bm25.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d5 2 1.0 x\nq1 d9\n")
    code, out, _ = cli(capsys, "datasets", "check", str(folder))
    assert code == 1
    for problem in (
        "duplicate document ids",
        "documents with empty text",
        "non-UTF-8",
        "malformed document lines",
        "queries with empty text",
        "query ids absent from queries.jsonl",
        "judged document ids absent from the corpus",
        "bm25.trec: document ids absent from the corpus",
        "malformed lines in candidates/bm25.trec",
    ):
        assert problem in out, problem
    assert "corpus.jsonl:5" in out and "bm25.trec:3" in out


@pytest.mark.slow
def test_torchrun_precompute_builds_the_same_store(tmp_path, data_dir, minilm_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = [
        "precompute",
        "--model",
        "mice-l2+2",
        "--checkpoint",
        "minilm-l6",
        "--dataset",
        str(data_dir / "adi"),
        "--mode",
        "states",
        "--dtype",
        "fp32",
        "--device",
        "cpu",
        "--chunk-docs",
        "20",
    ]
    subprocess.run(
        [sys.executable, "-m", "micebench", *args, "-o", str(tmp_path / "one")],
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    result = subprocess.run(
        [
            torchrun,
            "--nproc-per-node",
            "2",
            "--master-port",
            "29518",
            "-m",
            "micebench",
            *args,
            "-o",
            str(tmp_path / "two"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert "shard-00004.safetensors" in names and names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
