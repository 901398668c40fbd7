"""Crash-safe runs: a lock per result folder, per-query progress that `--resume` continues, torchrun sharding.

Scores are appended to `.<ranker>.partial/scores-rank<R>.tsv` (exact `repr` floats, flushed and fsynced) as
query chunks finish; `--resume` reloads them, checks the configuration hash, and scores only what is left, so
the final run file is byte-identical to an uninterrupted run. Under `torchrun` each rank scores its share of
the queries (round-robin over sorted query ids) into its own file; rank 0 merges, evaluates and writes.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from micebench.data.trec import Run
from micebench.errors import MicebenchError

log = logging.getLogger("micebench")


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
        #: the chunks this process appended, as columns, while reading them back would give the same scores (else
        #: None, and the file is read), and the size of this rank's file before them
        self._kept: list[Chunk] | None = None
        self._start = 0

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
        elif resume and self.rank == 0:
            log.warning("--resume: no unfinished run of %s to continue; starting from the beginning", self.result)

    def create(self) -> None:
        """Make the progress folder (right before the first score is recorded)."""
        from micebench.atomic import atomic_write_text, writing

        meta = self.folder / "config.json"
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            if not meta.is_file():
                atomic_write_text(meta, json.dumps({"hash": self.digest}), durable=True)

    def load(self) -> Run:
        """Every score recorded so far, by any rank."""
        return self._read()[0]

    def done(self) -> set[str]:
        """Queries whose chunk was completely written (a trailing END marker per chunk)."""
        return self._read()[1]

    def append(self, rows: list[tuple[str, str, float]]) -> None:
        """Record one finished chunk durably (and keep it in memory, so that it need not be read back); a write
        the machine refuses is one line (`atomic.writing`)."""
        from micebench.atomic import writing

        with writing(self.folder):
            self._append(rows)

    def _append(self, rows: list[tuple[str, str, float]]) -> None:
        if self._handle is None:
            path = self.folder / f"scores-rank{self.rank}.tsv"
            self._handle = open(path, "a", encoding="utf-8")
            self._start = os.fstat(self._handle.fileno()).st_size
            self._kept = [] if self._start == 0 or _ends_with_marker(path) else None
        text = "".join([f"{q}\t{d}\t{s!r}\n" for q, d, s in rows])
        try:
            self._handle.write(text + "#END\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except BaseException:
            self._kept = None  # the file holds what was written of the chunk: read it, not memory
            raise
        if self._kept is not None:
            chunk = kept_chunk(rows, text)
            if chunk is None:
                self._kept = None
            else:
                self._kept.append(chunk)

    def finished_run(self) -> Run:
        """Scores of completed chunks only (each file is read once, this process's chunks not at all).

        The chunks kept in memory are let go (the run holds their scores); later reads read the file."""
        run, done = self._read()
        self._kept = None
        return {q: docs for q, docs in run.items() if q in done}

    def _read(self) -> tuple[Run, set[str]]:
        """The scores recorded by every rank, in file order (a later score of a pair replaces the earlier one),
        and the queries of completely written chunks."""
        run: Run = {}
        done: set[str] = set()
        own = self.folder / f"scores-rank{self.rank}.tsv"
        for path in sorted(self.folder.glob("scores-rank*.tsv")):
            if path == own and self._kept is not None:
                with open(path, "rb") as handle:
                    before = io.BytesIO(handle.read(self._start))
                scores, finished = scores_of(io.TextIOWrapper(before, encoding="utf-8"))
                merge_scores(run, scores)
                for chunk in self._kept:
                    assign_rows(run, chunk.qids, chunk.docnos, chunk.scores)
                    finished |= chunk.queries
            else:
                scores, finished = read_scores(path)
                merge_scores(run, scores)
            done |= finished
        return run, done

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._kept = None, None
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class Chunk:
    """One appended chunk as columns, and its distinct queries."""

    qids: tuple[str, ...]
    docnos: tuple[str, ...]
    scores: tuple[float, ...]
    queries: frozenset[str]


def kept_chunk(rows: list[tuple[str, str, float]], text: str) -> Chunk | None:
    """`rows` as a Chunk when reading their `text` back gives exactly them: string ids without a tab, CR or
    newline, no query id that reads as an END marker, float scores that are not NaN; None otherwise."""
    if text.count("\t") != 2 * len(rows) or text.count("\n") != len(rows) or "\r" in text:
        return None
    # by column (not zip(*rows), whose per-row iterators would outlive young garbage collections and make the
    # collector sweep the whole heap again and again)
    qids, docnos, scores = (tuple(map(itemgetter(i), rows)) for i in range(3))
    queries = frozenset(qids)
    if any(type(q) is not str or q.startswith("#END") for q in queries):
        return None
    if any(t is not str for t in set(map(type, docnos))) or any(t is not float for t in set(map(type, scores))):
        return None
    if any(map(math.isnan, scores)):
        return None
    return Chunk(qids, docnos, scores, queries)


def _ends_with_marker(path: Path) -> bool:
    """Whether a progress file ends with a complete END marker (its last chunk finished)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - 5))
        return handle.read() == b"#END\n"


def assign_rows(run: Run, qids: Sequence[str], docnos: Sequence[str], scores: Sequence[float]) -> None:
    """`run[qid][docno] = score` row by row, done a block of one query's rows at a time."""
    start = 0
    for qid, block in groupby(qids):
        end = start + len(list(block))
        pairs = zip(docnos[start:end], scores[start:end], strict=True)
        if qid in run:
            run[qid].update(pairs)
        else:
            run[qid] = dict(pairs)
        start = end


def merge_scores(run: Run, scores: Run) -> None:
    """Add a later file's scores to `run` (as if its lines followed those already read)."""
    for qid, docs in scores.items():
        if qid in run:
            run[qid].update(docs)
        else:
            run[qid] = docs


def read_scores(path: Path) -> tuple[Run, set[str]]:
    """One rank's progress file: its scores and the queries of its completely written chunks."""
    with open(path, encoding="utf-8") as handle:
        return scores_of(handle)


def scores_of(lines: Iterable[str]) -> tuple[Run, set[str]]:
    """The scores and finished queries of a progress file's lines: a line without 3 fields is skipped, an END
    marker completes the queries of the lines since the previous one (whole lines only)."""
    run: Run = {}
    done: set[str] = set()
    pending: set[str] = set()
    for line in lines:
        if line.startswith("#END"):
            done |= pending
            pending = set()
        elif line.count("\t") == 2 and line.endswith("\n"):
            pending.add(line.split("\t", 1)[0])
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3:  # a line cut by a crash: its query chunk is redone
            continue
        try:
            score = float(parts[2])
        except ValueError:  # cut right after a tab
            continue
        run.setdefault(parts[0], {})[parts[1]] = score
    return run, done


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
