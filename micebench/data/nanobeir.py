"""NanoBEIR: 13 BEIR sets of 50 queries with a supplied BM25 ranking, as sentence-transformers evaluates re-rankers.

Layout and defaults follow sentence-transformers' `CrossEncoderNanoBEIREvaluator` (cross_encoder/evaluation/
nano_beir.py: `dataset_name_to_id`, `_load_dataset`) and `CrossEncoderRerankingEvaluator` (reranking.py:
`__call__`, `compute_metrics`):

- each set is the hub dataset `sentence-transformers/Nano<Set>-bm25`, loaded with `datasets.load_dataset(id,
  config, split="train")` for the configs `corpus` (`_id`, `text`), `queries` (`_id`, `text`) and `relevance`
  (`query-id`, `positive-corpus-ids`, `bm25-ranked-ids`); a document's text is the corpus `text` as it is;
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

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from micebench.data.base import Dataset
from micebench.data.trec import Qrels, Run
from micebench.errors import DataError, MicebenchError

#: a folder holding `<repo>/<config>/*.parquet` (the hub repositories' own layout) read instead of the hub
LOCAL_DIR_ENV = "MICEBENCH_NANOBEIR_DIR"
HUB_OWNER = "sentence-transformers"
PROTOCOLS = ("rerank", "evaluator")
DEFAULT_PROTOCOL = "rerank"
CONFIGS = ("corpus", "queries", "relevance")


@dataclass(frozen=True)
class NanoSet:
    """One NanoBEIR set: micebench's short name, the hub repository's name, the evaluator's key."""

    name: str
    repo: str
    evaluator_key: str

    @property
    def hub_id(self) -> str:
        return f"{HUB_OWNER}/{self.repo}"


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


def load_table(nano: NanoSet, config: str) -> Any:
    """One config of a set as a `datasets.Dataset`: from `$MICEBENCH_NANOBEIR_DIR/<repo>/<config>/*.parquet` when
    set, else from the hub (cached by `datasets`). What follows the loading is the same for both."""
    try:
        import datasets
    except ImportError:
        raise MicebenchError("NanoBEIR needs the `datasets` package: pip install 'micebench[nanobeir]'") from None
    local = os.environ.get(LOCAL_DIR_ENV)
    try:
        if local:
            return _load_local(datasets, local_files(nano, config, local))
        return datasets.load_dataset(nano.hub_id, config, split="train")
    except MicebenchError:
        raise
    except Exception as error:  # the hub unreachable, a damaged cache: one line naming the set
        reason = " ".join(str(error).split())[:300]
        raise DataError(f"cannot load {nano.hub_id} ({config}): {type(error).__name__}: {reason}") from None


def local_files(nano: NanoSet, config: str, local: str) -> list[Path]:
    """The parquet files of one config under the local folder; none is one line naming what is missing."""
    files = sorted((Path(local).expanduser() / nano.repo / config).glob("*.parquet"))
    if not files:
        raise DataError(f"{LOCAL_DIR_ENV}: no {nano.repo}/{config}/*.parquet under {local}")
    return files


def _load_local(datasets: Any, files: list[Path]) -> Any:
    """Local parquet files through `datasets.load_dataset("parquet", ...)`, without its progress bars."""
    was_enabled = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _column(table: Any, config: str, name: str, nano: NanoSet) -> list[Any]:
    if name not in table.column_names:
        raise DataError(f"{nano.hub_id} ({config}) has no column {name!r} (columns: {', '.join(table.column_names)})")
    return list(table[name])


@dataclass(frozen=True)
class NanoTables:
    """A set as plain dictionaries: corpus and query texts, positives and the BM25 ranking per query."""

    corpus: dict[str, str]
    queries: dict[str, str]
    positives: dict[str, list[str]]
    bm25: dict[str, list[str]]


@cache
def read_set(nano: NanoSet, source: str) -> NanoTables:
    """Read the three configs of a set once per process (`source` keys the cache: hub or local folder)."""
    local = os.environ.get(LOCAL_DIR_ENV)
    for config in CONFIGS if local else ():  # a missing config is refused before any is read
        local_files(nano, config, local)
    corpus = load_table(nano, "corpus")
    queries = load_table(nano, "queries")
    relevance = load_table(nano, "relevance")
    texts = dict(zip(_column(corpus, "corpus", "_id", nano), _column(corpus, "corpus", "text", nano), strict=True))
    qtexts = dict(zip(_column(queries, "queries", "_id", nano), _column(queries, "queries", "text", nano), strict=True))
    qids = _column(relevance, "relevance", "query-id", nano)
    positives = _column(relevance, "relevance", "positive-corpus-ids", nano)
    ranking = _column(relevance, "relevance", "bm25-ranked-ids", nano)
    if len(set(qids)) != len(qids):
        raise DataError(f"{nano.hub_id} (relevance): a query id appears twice")
    return NanoTables(
        {str(k): str(v or "") for k, v in texts.items()},
        {str(k): str(v or "") for k, v in qtexts.items()},
        {str(q): [str(d) for d in p] for q, p in zip(qids, positives, strict=True)},
        {str(q): [str(d) for d in r] for q, r in zip(qids, ranking, strict=True)},
    )


class NanoBeirDataset(Dataset):
    """A NanoBEIR set under one protocol (`rerank` or `evaluator`); see the module docstring."""

    def __init__(self, nano: NanoSet, protocol: str = DEFAULT_PROTOCOL, name: str | None = None):
        if protocol not in PROTOCOLS:
            raise DataError(f"unknown NanoBEIR protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
        self.nano = nano
        self.protocol = protocol
        local = os.environ.get(LOCAL_DIR_ENV)
        where = f"local:{Path(local).expanduser().resolve() / nano.repo}" if local else f"huggingface:{nano.hub_id}"
        self.source = where
        self.name = name or PREFIX + nano.name + ("" if protocol == DEFAULT_PROTOCOL else f"@{protocol}")

    @property
    def tables(self) -> NanoTables:
        return read_set(self.nano, self.source)

    def queries(self) -> dict[str, str]:
        """The queries of the relevance table (the ones the evaluator scores), with their texts."""
        texts = self.tables.queries
        missing = [q for q in self.tables.positives if q not in texts]
        if missing:
            raise DataError(f"{self.nano.hub_id}: query id {missing[0]!r} of relevance is not in queries")
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
        return {**super().describe(), "protocol": protocol_label(self.protocol)}


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
