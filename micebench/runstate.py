"""Crash-safe runs: a lock per result folder, per-query progress that `--resume` continues, torchrun sharding.

Scores are appended to `.<ranker>.partial/scores-rank<R>.tsv` (exact `repr` floats, flushed and fsynced) as
query chunks finish; `--resume` reloads them, checks the configuration hash, and scores only what is left, so
the final run file is byte-identical to an uninterrupted run. Under `torchrun` each rank scores its share of
the queries (round-robin over sorted query ids) into its own file; rank 0 merges, evaluates and writes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micebench.data.trec import Run
from micebench.errors import MicebenchError


class ResultLock:
    """An exclusive, non-blocking file lock next to a result folder (released when the process ends).

    The folders it had to create for the lock are removed again on release when the run left nothing in them.
    """

    def __init__(self, folder: Path, rank: int = 0):
        self.path = folder.parent / f".{folder.name}.lock-rank{rank}"
        self.folder = folder
        self._handle: Any = None
        self._created: list[Path] = []

    def __enter__(self) -> ResultLock:
        from micebench.atomic import make_folders, remove_empty, write_fault

        for attempt in range(3):  # another process may remove an empty parent between mkdir and open
            try:
                self._created = make_folders(self.folder.parent) or self._created
                self._handle = open(self.path, "w")
                break
            except OSError as error:
                if isinstance(error, FileNotFoundError) and attempt < 2:
                    continue
                remove_empty(self._created)
                raise write_fault(self.folder, error) from None
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise MicebenchError(f"another process is writing {self.folder} (lock {self.path})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        from micebench.atomic import remove_empty

        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self.path.unlink(missing_ok=True)
        remove_empty(self._created)


def config_hash(config: dict[str, Any]) -> str:
    """Hash of what decides the scores (not where they go, nor whether to resume or overwrite)."""
    keep = {k: v for k, v in config.items() if k not in ("output", "overwrite", "resume", "data_dir")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PartialScores:
    """Per-query scores of an unfinished run, one append-only file per rank."""

    def __init__(self, folder: Path, digest: str, rank: int = 0):
        self.folder = folder.parent / f".{folder.name}.partial"
        self.result = folder
        self.digest = digest
        self.rank = rank
        self._handle: Any = None

    def check(self, resume: bool, overwrite: bool) -> None:
        """Before any model work: refuse a resume with another configuration, or clobbering without leave."""
        meta = self.folder / "config.json"
        if self.folder.exists():
            if resume:
                recorded = json.loads(meta.read_text()).get("hash") if meta.is_file() else None
                if recorded != self.digest:
                    raise MicebenchError(
                        f"cannot resume {self.result}: it was started with another configuration "
                        f"(hash {recorded}, now {self.digest}); use --overwrite to start again"
                    )
            elif overwrite:
                if self.rank == 0:
                    shutil.rmtree(self.folder, ignore_errors=True)
            else:
                raise MicebenchError(
                    f"an unfinished run exists for {self.result} (use --resume to continue it or --overwrite)"
                )

    def create(self) -> None:
        """Make the progress folder (right before the first score is recorded)."""
        meta = self.folder / "config.json"
        self.folder.mkdir(parents=True, exist_ok=True)
        if not meta.is_file():
            from micebench.atomic import atomic_write_text

            atomic_write_text(meta, json.dumps({"hash": self.digest}), durable=True)

    def load(self) -> Run:
        """Every score recorded so far, by any rank."""
        run: Run = {}
        for path in sorted(self.folder.glob("scores-rank*.tsv")):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) != 3:  # a line cut by a crash: its query chunk is redone
                        continue
                    run.setdefault(parts[0], {})[parts[1]] = float(parts[2])
        return run

    def done(self) -> set[str]:
        """Queries whose chunk was completely written (a trailing END marker per chunk)."""
        finished: set[str] = set()
        for path in sorted(self.folder.glob("scores-rank*.tsv")):
            pending: set[str] = set()
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith("#END"):
                        finished |= pending
                        pending = set()
                    elif line.count("\t") == 2 and line.endswith("\n"):
                        pending.add(line.split("\t", 1)[0])
        return finished

    def append(self, rows: list[tuple[str, str, float]]) -> None:
        """Record one finished chunk durably."""
        if self._handle is None:
            self._handle = open(self.folder / f"scores-rank{self.rank}.tsv", "a", encoding="utf-8")
        self._handle.write("".join(f"{q}\t{d}\t{s!r}\n" for q, d, s in rows) + "#END\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def finished_run(self) -> Run:
        """Scores of completed chunks only."""
        done = self.done()
        return {q: docs for q, docs in self.load().items() if q in done}

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)


#: how long a collective (a barrier) may wait for the slowest rank; after `--resume` the ranks' remaining work
#: can be very uneven, so this is far above NCCL's default of 10 minutes. Override with MICEBENCH_DIST_TIMEOUT_S.
DEFAULT_DIST_TIMEOUT_S = 24 * 3600

_HOST_GROUP: dict[str, Any] = {}


def dist_timeout() -> Any:
    """The collective timeout as a timedelta: MICEBENCH_DIST_TIMEOUT_S seconds, or a day by default."""
    from datetime import timedelta

    raw = os.environ.get("MICEBENCH_DIST_TIMEOUT_S", "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_DIST_TIMEOUT_S
    except ValueError:
        raise MicebenchError(f"MICEBENCH_DIST_TIMEOUT_S must be a number of seconds (got {raw!r})") from None
    if seconds <= 0:
        raise MicebenchError(f"MICEBENCH_DIST_TIMEOUT_S must be positive (got {raw!r})")
    return timedelta(seconds=seconds)


def uses_cuda(device: str) -> bool:
    """Whether torchrun ranks get one GPU each (NCCL): `auto` or `cuda` requested and CUDA present."""
    import torch

    return device in ("auto", "cuda") and torch.cuda.is_available()


def init_process_group(local_rank: int, cuda: bool) -> None:
    """Start the default group: the rank's GPU is made current first and given as `device_id` (NCCL binds to it)."""
    import torch
    import torch.distributed as dist

    timeout = dist_timeout()
    if cuda:
        gpu = torch.device("cuda", local_rank)
        torch.cuda.set_device(gpu)
        if not dist.is_initialized():
            dist.init_process_group("nccl", timeout=timeout, device_id=gpu)
    elif not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timeout)


def host_group() -> Any:
    """A Gloo group over all ranks for host-only barriers, so waiting on a slow rank never involves NCCL.

    None when the default group is Gloo already. Created once per process (all ranks call this together).
    """
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if "group" not in _HOST_GROUP:
        _HOST_GROUP["group"] = dist.new_group(backend="gloo", timeout=dist_timeout())
    return _HOST_GROUP["group"]


@dataclass
class Distributed:
    """torchrun's world: rank, size, local rank (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: Any = None  # the group barriers use (Gloo); None = the default group

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join torchrun's process group (NCCL with one GPU per rank, else Gloo); a lone process needs none."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        init_process_group(local, uses_cuda(device))
        return cls(rank, world, local, host_group())

    def barrier(self) -> None:
        """Wait for every rank, on the host (Gloo) with the configured timeout."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def device(self, requested: str) -> str:
        """The device this rank scores on: its own GPU under torchrun when CUDA is asked for, else `requested`."""
        if self.world > 1 and uses_cuda(requested):
            return f"cuda:{self.local_rank}"
        return requested
