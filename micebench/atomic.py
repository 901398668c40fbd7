"""Write a folder or a file so that readers see either nothing or the complete thing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from micebench.errors import EnvironmentFault


def write_fault(target: Path | str, error: OSError) -> EnvironmentFault:
    """One line for a write the machine refused: what was being written, why, and the path that failed."""
    reason = error.strerror or str(error) or type(error).__name__
    failed = f" ({error.filename})" if error.filename and str(error.filename) != str(target) else ""
    return EnvironmentFault(f"cannot write {target}: {reason}{failed}")


def umask_mode() -> int:
    """The mode a new folder gets under the process umask (what `mkdir` gives; `mkdtemp` gives 0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def remove_path(path: Path) -> None:
    """Remove a folder tree, or a symlink itself (never what it points to); missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def check_can_create(folder: Path | str) -> None:
    """Before any work whose result goes to `folder`: its nearest existing ancestor is a folder this process may
    write in (else one line, exit 1, instead of a failure after the work)."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise EnvironmentFault(f"cannot write {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EnvironmentFault(f"cannot write {folder}: Permission denied ({probe})")


@contextmanager
def writing(target: Path | str) -> Iterator[None]:
    """The writes inside are to `target`: an OSError they raise becomes one line (`write_fault`), a machine fault
    the CLI exits 1 on. Writers wrap their own writes with it, so no caller has to."""
    try:
        yield
    except OSError as error:
        raise write_fault(target, error) from None


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns the folders created, deepest first."""
    missing = []
    probe = folder
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_empty(missing)
        raise
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove the given folders, deepest first, stopping at the first that is not empty (or already gone)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `folder` (an old one is swapped out first).

    On any error the temporary folder is removed and an old `folder` is left as it was."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    os.chmod(tmp, umask_mode())  # readable by colleagues as the umask allows, like any folder `mkdir` makes
    try:
        yield tmp
        if folder.exists() or folder.is_symlink():
            backup = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, backup)
            try:
                os.replace(tmp, folder)
            except BaseException:
                os.replace(backup, folder)
                raise
            remove_path(backup)  # a symlinked result: the link goes, its target is left alone
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_text_writer(path: Path, durable: bool = False) -> Iterator[TextIO]:
    """Yield a handle on a temporary sibling file; on success it replaces `path` (fsync first when `durable`),
    on error it is removed. For files written line by line."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, durable: bool = False) -> Path:
    """Write a text file under a temporary name, then rename it (fsync first when `durable`)."""
    with atomic_text_writer(path, durable) as handle:
        handle.write(text)
    return path
