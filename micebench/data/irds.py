"""Collections served by ir_datasets (downloaded and cached by ir_datasets itself)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from micebench.data.base import Dataset, join_title
from micebench.data.trec import Judgements, Qrels, Run, Sink, refuse_or_warn
from micebench.errors import DataError, EnvironmentFault, MicebenchError, UnknownNameError

#: errno values of a full, read-only or failing disk while ir_datasets writes its cache (a fault of the machine)
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


class _DropRetries(logging.Filter):
    """ir_datasets logs each failed try of a download; the failure is reported in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("download error:", "Download failed:", "[error] "))


def _import_irds() -> Any:
    import ir_datasets

    logger = logging.getLogger("ir_datasets")  # the one logger ir_datasets writes to
    level = logger.level
    ir_datasets.log.easy().logger()  # set up now: on first use it sets INFO over the level the command line chose
    logger.setLevel(level or logging.INFO)
    if not any(isinstance(f, _DropRetries) for f in logger.filters):
        logger.addFilter(_DropRetries())
    return ir_datasets


def _download_failure(dataset_id: str, name: str, error: OSError) -> MicebenchError:
    """The one line of a download that failed: the dataset, where from, and the offline way (MICEBENCH_DATA)."""
    if error.errno in _DISK_ERRNOS:
        return EnvironmentFault(f"cannot load {name} (ir_datasets {dataset_id}): {error.strerror or error}")
    request = getattr(error, "request", None)
    url = getattr(request, "url", None) or ""
    host = url.split("/")[2] if url.count("/") >= 2 else ""
    return EnvironmentFault(
        f"cannot load {name}: the download of ir_datasets {dataset_id}{f' from {host}' if host else ''} failed "
        f"({type(error).__name__}); without network, put the collection in a BEIR-layout folder under a data "
        f"directory and set MICEBENCH_DATA (or --data-dir) to it"
    )


def irds_has(dataset_id: str) -> bool:
    """True when ir_datasets knows the id (no download happens)."""
    return dataset_id in _import_irds().registry


def _doc_text(doc: Any) -> str:
    fields = doc._fields
    if "title" in fields and "text" in fields:
        return join_title(doc.title, doc.text)
    return doc.default_text()


def _query_text(query: Any) -> str:
    return query.text if "text" in query._fields else query.default_text()


class IrDatasetsDataset(Dataset):
    """An ir_datasets id, e.g. ``msmarco-passage/trec-dl-2019/judged`` or ``beir/scifact/test``."""

    def __init__(self, dataset_id: str, name: str | None = None):
        irds = _import_irds()
        if dataset_id not in irds.registry:
            raise UnknownNameError(f"unknown ir_datasets id: {dataset_id!r}")
        self.dataset_id = dataset_id
        self._ds = irds.load(dataset_id)
        if not self._ds.has_queries() or not self._ds.has_qrels():
            raise DataError(f"ir_datasets id {dataset_id!r} has no queries/qrels to evaluate against")
        self.name = name or dataset_id
        self.source = f"ir_datasets:{dataset_id}"
        self._queries: dict[str, str] | None = None
        self._qrels: Qrels | None = None

    @contextmanager
    def _fetching(self) -> Iterator[None]:
        """ir_datasets downloads a collection on its first read: a failed download becomes one line."""
        try:
            yield
        except MicebenchError:
            raise
        except OSError as error:  # requests' and urllib3's errors are OSErrors too
            raise _download_failure(self.dataset_id, self.name, error) from None

    def queries(self) -> dict[str, str]:
        if self._queries is None:
            with self._fetching():
                self._queries = {q.query_id: _query_text(q) for q in self._ds.queries_iter()}
        return self._queries

    def qrels(self) -> Qrels:
        if self._qrels is None:
            self._qrels = self.read_qrels()
        return self._qrels

    def read_qrels(self, sink: Sink = refuse_or_warn) -> Qrels:
        """Judgements under the same rules as qrels files: conflicting grades refused, exact repeats counted."""
        table = Judgements(f"ir_datasets {self.dataset_id} qrels", Path(self.dataset_id), sink, unit="row")
        with self._fetching():
            for number, row in enumerate(self._ds.qrels_iter(), start=1):
                table.add(row.query_id, row.doc_id, int(row.relevance), number)
        return table.finish()

    def iter_docs(self) -> Iterator[tuple[str, str]]:
        with self._fetching():
            for doc in self._ds.docs_iter():
                yield doc.doc_id, _doc_text(doc)

    def doc_texts(self, docnos: Iterable[str]) -> dict[str, str]:
        with self._fetching():
            store = self._ds.docs_store()
            return {docno: _doc_text(doc) for docno, doc in store.get_many(list(set(docnos))).items()}

    def candidate_names(self) -> list[str]:
        return ["bm25"] if self._ds.has_scoreddocs() else []

    def candidates(self, name: str) -> Run:
        if name != "bm25" or not self._ds.has_scoreddocs():
            raise KeyError(name)
        run: Run = {}
        with self._fetching():
            for row in self._ds.scoreddocs_iter():
                run.setdefault(row.query_id, {})[row.doc_id] = float(row.score)
        return run

    def fingerprint(self) -> str:
        return self.source
