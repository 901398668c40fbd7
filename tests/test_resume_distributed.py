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


def test_resume_without_progress_runs_normally(capsys, tmp_path, data_dir):
    code, _, err = cli(
        capsys, "run", "--model", "bm25", "--dataset", str(data_dir / "adi"), "-o", str(tmp_path), "--resume"
    )
    assert code == 0, err
