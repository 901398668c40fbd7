"""NanoBEIR: 13 BEIR sets of 50 queries with a supplied BM25 ranking, as sentence-transformers evaluates re-rankers.

Layout and defaults follow sentence-transformers' `CrossEncoderNanoBEIREvaluator` (cross_encoder/evaluation/
nano_beir.py: `dataset_name_to_id`, `_load_dataset`) and `CrossEncoderRerankingEvaluator` (reranking.py:
`__call__`, `compute_metrics`):

- two hub layouts (`MICEBENCH_NANOBEIR_LAYOUT`; each result's manifest names the one it read):
  - `nanobeir-en` (the default, what sentence-transformers' `CrossEncoderNanoEvaluator` reads now): one dataset
    `sentence-transformers/NanoBEIR-en` with the subsets `corpus` (`_id`, `text`), `queries` (`_id`, `text`),
    `qrels` (`query-id`, `corpus-id`) and `bm25` (`query-id`, `corpus-ids`), one split per set (`Nano<Set>`);
    the queries are the `bm25` subset's;
  - `per-set` (the older one): `sentence-transformers/Nano<Set>-bm25`, split `train`, configs `corpus`, `queries`
    and `relevance` (`query-id`, `positive-corpus-ids`, `bm25-ranked-ids`);
- a document's text is the corpus `text` as it is; a corpus or query id twice, a null id or list, or a list
  column that holds anything but ids (a list written as a string, `"['d1', 'd7']"`, is read as that list) is
  refused in one line naming the table and row;
- the candidates are `bm25-ranked-ids[:rerank_k]` (rerank_k = 100 = `--top-k`), judgements are binary
  (`positive-corpus-ids`);
- `always_rerank_positives=True` is the evaluator's default: every positive is put into the re-ranked list, even
  when BM25 did not retrieve it, so nDCG@10 can reach 1.0 (`docs = positive + [doc for doc in documents if doc
  not in positive]`);
- nDCG@10 is sklearn's `ndcg_score([is_relevant], [scores], k=10)` over that list: linear gains, log2 discount,
  tied scores averaged, and the ideal DCG from the relevance labels of the re-ranked list only.

Two protocols, named in the dataset name, the manifest and the report:

- `rerank` (default, `nano-<set>`): the BM25 top-k only, no positive added; nDCG@10 as for every other
  collection (ranx, ideal DCG over all judged positives, also those BM25 missed): what a re-ranker achieves.
- `evaluator` (`nano-<set>@evaluator`): the evaluator's default protocol, comparable with model-card numbers.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from micebench.data.base import Dataset
from micebench.data.trec import Qrels, Run
from micebench.errors import DataError, MicebenchError, first_line

#: a folder holding the hub repositories' own layout (`NanoBEIR-en/<subset>/Nano<Set>-*.parquet`, or the older
#: `Nano<Set>-bm25/<config>/*.parquet`), read instead of the hub
LOCAL_DIR_ENV = "MICEBENCH_NANOBEIR_DIR"
#: which hub layout to read (`nanobeir-en` or `per-set`); unset: what the local folder holds, else `nanobeir-en`
LAYOUT_ENV = "MICEBENCH_NANOBEIR_LAYOUT"
HUB_OWNER = "sentence-transformers"
PROTOCOLS = ("rerank", "evaluator")
DEFAULT_PROTOCOL = "rerank"
#: the current layout: one repository, subsets corpus/queries/qrels/bm25, one split per set (`Nano<Set>`), as
#: sentence-transformers' `CrossEncoderNanoBEIREvaluator` reads since its `CrossEncoderNanoEvaluator`
NANOBEIR_EN = "nanobeir-en"
#: the older layout: one repository per set (`Nano<Set>-bm25`), configs corpus/queries/relevance, split `train`
PER_SET = "per-set"
LAYOUTS = (NANOBEIR_EN, PER_SET)
NANOBEIR_EN_REPO = "NanoBEIR-en"
#: the configs (subsets) each layout reads
CONFIGS: dict[str, tuple[str, ...]] = {
    NANOBEIR_EN: ("corpus", "queries", "qrels", "bm25"),
    PER_SET: ("corpus", "queries", "relevance"),
}


@dataclass(frozen=True)
class NanoSet:
    """One NanoBEIR set: micebench's short name, the per-set hub repository's name, the evaluator's key."""

    name: str
    repo: str
    evaluator_key: str

    @property
    def hub_id(self) -> str:
        """The per-set repository (the older layout)."""
        return f"{HUB_OWNER}/{self.repo}"

    @property
    def split(self) -> str:
        """The set's split in `sentence-transformers/NanoBEIR-en` (`Nano<Set>`)."""
        return self.repo.removesuffix("-bm25")


#: the 13 sets of `dataset_name_to_id` (nano_beir.py), under micebench's BEIR short names
NANO_SETS: dict[str, NanoSet] = {
    s.name: s
    for s in [
        NanoSet("arguana", "NanoArguAna-bm25", "arguana"),
        NanoSet("climate-fever", "NanoClimateFEVER-bm25", "climatefever"),
        NanoSet("dbpedia", "NanoDBPedia-bm25", "dbpedia"),
        NanoSet("fever", "NanoFEVER-bm25", "fever"),
        NanoSet("fiqa", "NanoFiQA2018-bm25", "fiqa2018"),
        NanoSet("hotpotqa", "NanoHotpotQA-bm25", "hotpotqa"),
        NanoSet("msmarco", "NanoMSMARCO-bm25", "msmarco"),
        NanoSet("nfcorpus", "NanoNFCorpus-bm25", "nfcorpus"),
        NanoSet("nq", "NanoNQ-bm25", "nq"),
        NanoSet("quora", "NanoQuoraRetrieval-bm25", "quoraretrieval"),
        NanoSet("scidocs", "NanoSCIDOCS-bm25", "scidocs"),
        NanoSet("scifact", "NanoSciFact-bm25", "scifact"),
        NanoSet("touche", "NanoTouche2020-bm25", "touche2020"),
    ]
}
#: suites run as one experiment: all 13, and the evaluator's default `dataset_names` (without arguana and
#: touche2020, "whose Argument Retrieval task differs"; the MICE authors' `nanobeir11`)
SUITES: dict[str, tuple[str, ...]] = {
    "nanobeir": tuple(NANO_SETS),
    "nanobeir11": tuple(s for s in NANO_SETS if s not in ("arguana", "touche")),
}
PREFIX = "nano-"


def split_protocol(name: str) -> tuple[str, str]:
    """`nano-scifact@evaluator` -> (`nano-scifact`, `evaluator`); no suffix means the default protocol."""
    base, at, protocol = name.partition("@")
    if not at:
        return name, DEFAULT_PROTOCOL
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown NanoBEIR protocol {protocol!r} in {name!r} (use {' or '.join(PROTOCOLS)})")
    return base, protocol


def nano_set(name: str) -> tuple[NanoSet, str] | None:
    """The set and protocol a dataset name stands for (`nano-<set>[@protocol]`), or None for other names."""
    base, _, _ = name.partition("@")
    if not base.startswith(PREFIX) or base[len(PREFIX) :] not in NANO_SETS:
        return None
    return NANO_SETS[base[len(PREFIX) :]], split_protocol(name)[1]


def suite_members(name: str) -> list[str] | None:
    """The dataset names a suite (`nanobeir[11][@protocol]`) expands to, or None for other names."""
    base, at, _ = name.partition("@")
    if base not in SUITES:
        return None
    _, protocol = split_protocol(name)
    suffix = f"@{protocol}" if at else ""
    return [f"{PREFIX}{s}{suffix}" for s in SUITES[base]]


def protocol_label(protocol: str) -> str:
    """One line naming a protocol for manifests and reports."""
    if protocol == "evaluator":
        return (
            "evaluator: sentence-transformers CrossEncoderNanoBEIREvaluator defaults (always_rerank_positives=True: "
            "judged positives added to the BM25 top-k; nDCG@10 ideal over the re-ranked list, tied scores averaged)"
        )
    return "rerank: BM25 top-k only, no positive added; nDCG@10 ideal over all judged positives"


# -- loading -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NanoSource:
    """Where one set is read from: a layout, the hub repository and split, and the local folder (or None)."""

    nano: NanoSet
    layout: str
    local: Path | None

    @property
    def hub_id(self) -> str:
        return f"{HUB_OWNER}/{NANOBEIR_EN_REPO}" if self.layout == NANOBEIR_EN else self.nano.hub_id

    @property
    def split(self) -> str:
        return self.nano.split if self.layout == NANOBEIR_EN else "train"

    @property
    def folder(self) -> Path | None:
        """The local repository folder (None when read from the hub)."""
        if self.local is None:
            return None
        return self.local / (NANOBEIR_EN_REPO if self.layout == NANOBEIR_EN else self.nano.repo)

    @property
    def configs(self) -> tuple[str, ...]:
        return CONFIGS[self.layout]

    @property
    def key(self) -> str:
        """Identifies the set's files (a dataset's source and fingerprint): `local:<folder>` or
        `huggingface:<repo>`, with `@<split>` for the one-repository layout."""
        where = f"local:{self.folder}" if self.folder is not None else f"huggingface:{self.hub_id}"
        return f"{where}@{self.split}" if self.layout == NANOBEIR_EN else where

    def label(self, config: str) -> str:
        """How messages name one config: the local folder, or the hub id, config and split."""
        if self.folder is not None:
            return str(self.folder / config)
        return f"{self.hub_id} ({config}, split {self.split})"

    def describe(self) -> str:
        """One line for manifests: the layout, its repository and split."""
        configs = "/".join(self.configs)
        return f"{self.layout}: {self.hub_id} ({configs}, split {self.split})"


def _layout_setting() -> str | None:
    value = os.environ.get(LAYOUT_ENV, "").strip()
    if value and value not in LAYOUTS:
        raise DataError(f"{LAYOUT_ENV}={value!r} is not a NanoBEIR layout (use {' or '.join(LAYOUTS)})")
    return value or None


def nano_source(nano: NanoSet) -> NanoSource:
    """The layout and place a set is read from: `$MICEBENCH_NANOBEIR_LAYOUT` when set; else, with a local folder,
    the layout whose files it holds for this set (the current one when both); else the current one."""
    chosen = _layout_setting()
    local = os.environ.get(LOCAL_DIR_ENV)
    if not local:
        return NanoSource(nano, chosen or NANOBEIR_EN, None)
    root = Path(local).expanduser().resolve()
    if chosen is None:
        current = NanoSource(nano, NANOBEIR_EN, root)
        older = NanoSource(nano, PER_SET, root)
        chosen = NANOBEIR_EN if any(local_files(current, c, strict=False) for c in current.configs) else None
        if chosen is None and older.folder is not None and older.folder.is_dir():
            chosen = PER_SET
        if chosen is None:
            raise DataError(
                f"{LOCAL_DIR_ENV}: neither {NANOBEIR_EN_REPO}/<subset>/{nano.split}-*.parquet nor "
                f"{nano.repo}/<config>/*.parquet under {local}"
            )
    return NanoSource(nano, chosen, root)


def local_files(source: NanoSource, config: str, strict: bool = True) -> list[Path]:
    """The parquet files of one config in the local folder (`<subset>/<split>-*.parquet` of `NanoBEIR-en`,
    `<config>/*.parquet` of a per-set repository); none is one line naming what is missing (unless not strict)."""
    assert source.folder is not None
    folder = source.folder / config
    pattern = f"{source.split}-*.parquet" if source.layout == NANOBEIR_EN else "*.parquet"
    files = sorted(folder.glob(pattern))
    if not files and strict:
        relative = folder.relative_to(source.local) if source.local else folder
        raise DataError(f"{LOCAL_DIR_ENV}: no {relative}/{pattern} under {source.local}")
    return files


def check_local_files(source: NanoSource) -> None:
    """Every config's files exist (checked before any is read)."""
    if source.folder is not None:
        for config in source.configs:
            local_files(source, config)


#: a table as {column: values}, however it was read
Columns = dict[str, list[Any]]


def load_table(source: NanoSource, config: str) -> Columns:
    """One config of a set as columns: the local parquet files read with pyarrow (a damaged file is one line naming
    it), or the hub's through `datasets.load_dataset(repo, config, split=...)` (cached by `datasets`)."""
    if source.folder is not None:
        return _read_parquet(local_files(source, config))
    try:
        import datasets
    except ImportError:
        raise MicebenchError("NanoBEIR needs the `datasets` package: pip install 'micebench[nanobeir]'") from None
    try:
        table = datasets.load_dataset(source.hub_id, config, split=source.split)
        return {name: list(table[name]) for name in table.column_names}
    except MicebenchError:
        raise
    except Exception as error:  # the hub unreachable, a damaged cache: one line naming the set
        reason = " ".join(str(error).split())[:300]
        other = f" ({LAYOUT_ENV}=per-set reads the older per-set repositories)" if source.layout == NANOBEIR_EN else ""
        raise DataError(f"cannot load {source.label(config)}: {type(error).__name__}: {reason}{other}") from None


def _read_parquet(files: list[Path]) -> Columns:
    """Local parquet files as one table's columns; an unreadable file (truncated, not parquet) or files whose
    columns differ are one line naming the file."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MicebenchError("NanoBEIR needs the `datasets` package: pip install 'micebench[nanobeir]'") from None
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path))
        except OSError as error:
            if not path.is_file() or isinstance(error, PermissionError):
                raise MicebenchError(f"cannot read {path}: {first_line(error)}") from None
            raise DataError(f"{path}: not a readable parquet file ({first_line(error)})") from None
        except Exception as error:  # pyarrow's ArrowInvalid and kin: a damaged file
            raise DataError(f"{path}: not a readable parquet file ({first_line(error)})") from None
    try:
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    except Exception as error:
        raise DataError(f"{files[-1]}: its columns differ from {files[0].name}'s ({first_line(error)})") from None
    return table.to_pydict()


def _column(table: Columns, source: NanoSource, config: str, name: str) -> list[Any]:
    if name not in table:
        raise DataError(f"{source.label(config)} has no column {name!r} (columns: {', '.join(table)})")
    return table[name]


def _ids(values: list[Any], source: NanoSource, config: str, column: str) -> list[str]:
    """A column of ids as strings; a null id is one line naming its row."""
    for row, value in enumerate(values, 1):
        if value is None or (isinstance(value, float) and value != value):
            raise DataError(f"{source.label(config)}: row {row} has no {column} (null)")
    return [str(v) for v in values]


def _texts(table: Columns, source: NanoSource, config: str, kind: str) -> dict[str, str]:
    """`_id` -> `text` of a corpus or queries table; an id twice is refused, as in local BEIR folders."""
    ids = _ids(_column(table, source, config, "_id"), source, config, "_id")
    texts = _column(table, source, config, "text")
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for row, (key, text) in enumerate(zip(ids, texts, strict=True), 1):
        if key in first:
            raise DataError(f"{source.label(config)}: duplicate {kind} id {key!r} (rows {first[key]} and {row})")
        first[key] = row
        out[key] = "" if text is None else str(text)
    return out


def id_list(value: Any, where: str) -> list[str]:
    """A cell holding a list of ids: a list (or array), or such a list written as a string (`"['d1', 'd7']"`,
    as a CSV round trip leaves it); a null or any other string is one line naming `where`."""
    if isinstance(value, str):
        text = value.strip()
        parsed: Any = None
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                parsed = None
        if not isinstance(parsed, list | tuple):
            raise DataError(f"{where}: {value[:60]!r} is not a list of ids")
        value = parsed
    if value is None:
        raise DataError(f"{where}: no list of ids (null)")
    if not isinstance(value, list | tuple | np.ndarray):
        raise DataError(f"{where}: {value!r} is not a list of ids")
    if any(v is None or isinstance(v, list | tuple | dict) for v in value):
        raise DataError(f"{where}: {list(value)[:5]!r} holds something other than ids")
    return [str(v) for v in value]


@dataclass(frozen=True)
class NanoTables:
    """A set as plain dictionaries: corpus and query texts, positives and the BM25 ranking per query (the queries
    the set evaluates, in the file's order)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    positives: dict[str, list[str]]
    bm25: dict[str, list[str]]


@cache
def read_set(source: NanoSource) -> NanoTables:
    """Read a set's configs once per process; a missing config is refused before any is read."""
    check_local_files(source)
    corpus = _texts(load_table(source, "corpus"), source, "corpus", "document")
    queries = _texts(load_table(source, "queries"), source, "queries", "query")
    if source.layout == NANOBEIR_EN:
        positives, bm25 = _read_qrels_and_bm25(source)
    else:
        positives, bm25 = _read_relevance(source)
    return NanoTables(corpus, queries, positives, bm25)


def _per_query_lists(source: NanoSource, config: str, table: Columns, column: str) -> dict[str, list[str]]:
    """{query-id: ids} of a table with one row per query; a query twice is refused."""
    qids = _ids(_column(table, source, config, "query-id"), source, config, "query-id")
    cells = _column(table, source, config, column)
    out: dict[str, list[str]] = {}
    for row, (qid, cell) in enumerate(zip(qids, cells, strict=True), 1):
        if qid in out:
            raise DataError(f"{source.label(config)}: query id {qid!r} appears twice (row {row})")
        out[qid] = id_list(cell, f"{source.label(config)}: row {row} (query {qid!r}) {column}")
    return out


def _read_relevance(source: NanoSource) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The per-set layout's `relevance`: one row per query with `positive-corpus-ids` and `bm25-ranked-ids`."""
    table = load_table(source, "relevance")
    return (
        _per_query_lists(source, "relevance", table, "positive-corpus-ids"),
        _per_query_lists(source, "relevance", table, "bm25-ranked-ids"),
    )


def _read_qrels_and_bm25(source: NanoSource) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """`NanoBEIR-en`'s `qrels` (`query-id`, `corpus-id`: one row per judged pair, or a list) and `bm25`
    (`query-id`, `corpus-ids`); the queries are the `bm25` subset's, as the evaluator's (a query without qrels has
    no positive)."""
    qrels = load_table(source, "qrels")
    qids = _ids(_column(qrels, source, "qrels", "query-id"), source, "qrels", "query-id")
    judged: dict[str, list[str]] = {}
    for row, (qid, cell) in enumerate(zip(qids, _column(qrels, source, "qrels", "corpus-id"), strict=True), 1):
        where = f"{source.label('qrels')}: row {row} (query {qid!r}) corpus-id"
        is_list = isinstance(cell, list | tuple | np.ndarray) or (isinstance(cell, str) and cell.strip()[:1] == "[")
        if cell is None:
            raise DataError(f"{source.label('qrels')}: row {row} (query {qid!r}) has no corpus-id (null)")
        docs = id_list(cell, where) if is_list else [str(cell)]
        judged.setdefault(qid, [])
        judged[qid] += [d for d in docs if d not in judged[qid]]
    bm25 = _per_query_lists(source, "bm25", load_table(source, "bm25"), "corpus-ids")
    return {q: judged.get(q, []) for q in bm25}, bm25


def check_set(nano: NanoSet) -> None:
    """Read (and so check) a set's files: what a suite does for every member before any member runs."""
    read_set(nano_source(nano))


class NanoBeirDataset(Dataset):
    """A NanoBEIR set under one protocol (`rerank` or `evaluator`); see the module docstring."""

    def __init__(self, nano: NanoSet, protocol: str = DEFAULT_PROTOCOL, name: str | None = None):
        if protocol not in PROTOCOLS:
            raise DataError(f"unknown NanoBEIR protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
        self.nano = nano
        self.protocol = protocol
        self.location = nano_source(nano)
        self.source = self.location.key
        self.name = name or PREFIX + nano.name + ("" if protocol == DEFAULT_PROTOCOL else f"@{protocol}")

    @property
    def tables(self) -> NanoTables:
        return read_set(self.location)

    def queries(self) -> dict[str, str]:
        """The queries of the relevance (`bm25`) table, the ones the evaluator scores, with their texts."""
        texts = self.tables.queries
        missing = [q for q in self.tables.positives if q not in texts]
        if missing:
            config = "relevance" if self.location.layout == PER_SET else "bm25"
            raise DataError(f"{self.location.label(config)}: query id {missing[0]!r} is not in queries")
        return {q: texts[q] for q in self.tables.positives}

    def qrels(self) -> Qrels:
        """Binary judgements: grade 1 for each of `positive-corpus-ids`."""
        return {q: dict.fromkeys(docs, 1) for q, docs in self.tables.positives.items() if docs}

    def iter_docs(self) -> Iterator[tuple[str, str]]:
        yield from self.tables.corpus.items()

    def doc_texts(self, docnos: Iterable[str]) -> dict[str, str]:
        corpus = self.tables.corpus
        return {d: corpus[d] for d in set(docnos) if d in corpus}

    def candidate_names(self) -> list[str]:
        return ["bm25"]

    def candidates(self, name: str) -> Run:
        """`bm25-ranked-ids` in order, as scores that fall with the rank (the list carries no BM25 scores)."""
        if name != "bm25":
            raise KeyError(name)
        return {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in self.tables.bm25.items()}

    def rerank_set(self, run: Run) -> Run:
        """Under `evaluator`, every judged positive joins the query's candidates (the evaluator's
        `always_rerank_positives=True`), scored below the first stage's own; under `rerank` the run as it is."""
        if self.protocol != "evaluator":
            return run
        qrels = self.qrels()
        completed: Run = {}
        for qid, docs in run.items():
            floor = min(docs.values(), default=0.0)
            added = [d for d in qrels.get(qid, {}) if d not in docs]
            completed[qid] = {**docs, **{d: floor - 1.0 - i for i, d in enumerate(added)}}
        return completed

    def evaluate(self, run: Run, measures: Sequence[str]) -> Any:
        """ranx's measures; under `evaluator`, nDCG@k per query as the evaluator computes it (`evaluator_ndcg`)."""
        evaluation = super().evaluate(run, measures)
        if self.protocol != "evaluator":
            return evaluation
        qrels = self.qrels()
        for measure in measures:
            base, _, cutoff = measure.partition("@")
            if base != "nDCG" or not cutoff:
                continue
            values = {q: evaluator_ndcg(qrels.get(q, {}), run.get(q, {}), int(cutoff)) for q in qrels}
            evaluation.per_query[measure] = values
            evaluation.means[measure] = float(np.mean(list(values.values())))
            evaluation.sources[measure] = "sentence-transformers CrossEncoderRerankingEvaluator (sklearn ndcg_score)"
        return evaluation

    def fingerprint(self) -> str:
        return self.source

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "protocol": protocol_label(self.protocol), "layout": self.location.describe()}


def evaluator_ndcg(judged: dict[str, int], scores: dict[str, float], k: int = 10) -> float:
    """nDCG@k of one query as `CrossEncoderRerankingEvaluator.compute_metrics` computes it with sklearn's
    `ndcg_score([y_true], [y_pred], k)`: gains are the labels of the scored documents (binary here), the discount
    1/log2(rank+1) up to rank k, documents with tied scores share the mean gain of their group over the positions
    the group takes (`_tie_averaged_dcg`), and the ideal DCG sorts the same labels, so judged documents that were
    not scored do not count. A query with no judged document among those scored gets 0, as there."""
    docs = list(scores)
    gains = np.array([float(judged.get(d, 0) > 0) for d in docs])
    if not len(docs) or not gains.any():
        return 0.0
    values = np.array([scores[d] for d in docs], dtype=np.float64)
    discount = 1.0 / np.log2(np.arange(len(docs)) + 2.0)
    discount[k:] = 0.0
    cumulative = np.cumsum(discount)
    _, group_of, counts = np.unique(-values, return_inverse=True, return_counts=True)
    mean_gain = np.zeros(len(counts))
    np.add.at(mean_gain, group_of, gains)
    mean_gain /= counts
    ends = np.cumsum(counts) - 1
    group_discount = np.diff(cumulative[ends], prepend=0.0)
    dcg = float((mean_gain * group_discount).sum())
    ideal = float((np.sort(gains)[::-1] * discount).sum())
    return dcg / ideal
