"""What the `--full` plan costs before it runs: disk (checkpoints, stores, caches, runs) and GPU-hours per step.

Every figure is a product of a count and a unit cost stated below with its source: published collection sizes
(BEIR, Thakur et al. 2021, Table 1; MS MARCO passage), ir_datasets' own download sizes (its `downloads.json`),
costs measured with micebench (bytes per stored token, tokens per word), analytic FLOPs (`micebench.models.flops`)
and one ASSUMED figure, the sustained throughput of an H100 in bf16 on MiniLM-sized models. The paper's plan
re-ranks the BM25 top-1000 of about 40,000 queries with 8 families x 5 seeds; effectiveness is scored from the
texts (MICE with nothing stored gives the same scores as from its store), so stores are built only for the
efficiency table, over the top-1000 of a sample of MS MARCO dev queries.

    python benchmarks/full_plan.py sample-run RUN_FILE QUERIES OUT   # the first QUERIES queries of a TREC run
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

GB = 1e9

#: published sizes: judged queries evaluated, corpus documents, mean words per query and per document (BEIR
#: paper, Table 1; MS MARCO passage: dev small 6,980 queries, 8,841,823 passages; TREC DL 2019/2020: 43/54 judged)
COLLECTIONS: dict[str, tuple[int, int, float, float]] = {
    "msmarco-dev": (6980, 8_841_823, 5.96, 55.98),
    "trec-dl-19": (43, 8_841_823, 5.96, 55.98),
    "trec-dl-20": (54, 8_841_823, 5.96, 55.98),
    "arguana": (1406, 8674, 192.98, 166.80),
    "climate-fever": (1535, 5_416_593, 20.13, 84.76),
    "dbpedia": (400, 4_635_922, 5.39, 49.68),
    "fever": (6666, 5_416_568, 8.13, 84.76),
    "fiqa": (648, 57_638, 10.77, 132.32),
    "hotpotqa": (7405, 5_233_329, 17.61, 46.30),
    "nfcorpus": (323, 3633, 3.30, 232.26),
    "nq": (3452, 2_681_468, 9.16, 78.88),
    "quora": (10000, 522_931, 9.53, 11.44),
    "scidocs": (1000, 25_657, 9.38, 176.19),
    "scifact": (300, 5183, 12.37, 213.63),
    "touche": (49, 382_545, 6.55, 292.37),
    "trec-covid": (50, 171_332, 10.60, 160.77),
    "beir/nfcorpus/dev": (324, 3633, 3.30, 232.26),
}
#: measured: TREC DL 2019 passages are 83 tokens on average with [CLS]/[SEP] (docs/guides/stores.md) for 55.98
#: words (MS MARCO's mean), i.e. 1.48 tokens per word with the specials
TOKENS_PER_WORD = 83 / 55.98
#: measured: an fp16 MICE `states` store of MiniLM width (hidden 384) holds 62.1 KiB per TREC DL 2019 passage of
#: 83 tokens (docs/guides/stores.md), i.e. 2 bytes x hidden per token, plus the index
STATE_BYTES_PER_TOKEN = 62.1 * 1024 / 83
#: ColBERT stores 128 dimensions per token in fp16 (the same per-token layout)
COLBERT_BYTES_PER_TOKEN = 128 * 2
#: estimated from the layout of a `run.trec` line (`qid Q0 docno rank score tag`: ids of 6-40 characters, a
#: 4-digit rank, a 6-decimal score, the ranker's name), plus perquery.tsv's share
RUN_LINE_BYTES = 56
#: measured in the smoke run: a result folder's manifest, metrics and per-query files, 11.8 kB beside its run
RESULT_FOLDER_BYTES = 12e3
#: ASSUMED, not measured: sustained bf16 throughput of one H100 on MiniLM-sized models (hidden 384) at these
#: lengths, about 10% of its 989 TFLOP/s dense peak (small matrices keep it far from the peak)
H100_FLOPS = 100e12
#: training pads each batch to its longest pair: tokens per pair are the mean x this factor (estimate)
PADDING = 1.5
#: ir_datasets' caches besides the downloads: an extracted collection.tsv (3.06 GB for MS MARCO) and a docstore;
#: for MS MARCO ir_datasets states its docstore size (docstore_size_hint = 14,373,971,970 bytes), for a BEIR zip
#: we take 3x its size (corpus.jsonl extracted, then an lz4 docstore of similar size; estimate)
MSMARCO_EXTRACTED = 3.06 * GB + 14_373_971_970
BEIR_CACHE_FACTOR = 3.0
#: bm25s index: 8 bytes per posting (float32 score + int32 row), postings about 0.7 x words (estimate)
BM25_BYTES_PER_WORD = 0.7 * 8


@dataclass(frozen=True)
class Backbone:
    """The base model's dimensions (parameters, FLOPs and store widths follow from them)."""

    vocab: int = 30522
    positions: int = 512
    hidden: int = 384
    layers: int = 12
    ffn: int = 1536


#: MiniLM-L12-H384 (microsoft/MiniLM-L12-H384-uncased), the paper's base
MINILM_L12 = Backbone()


def backbone_of(folder: str | Path) -> Backbone:
    """The dimensions of a local checkpoint (its config.json): the smoke's tiny base."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return Backbone(config["vocab_size"], config["max_position_embeddings"], config["hidden_size"],
                    config["num_hidden_layers"], config["intermediate_size"])  # fmt: skip


@dataclass
class Cost:
    """Disk (bytes) and GPU time (hours) of one step."""

    disk: float = 0.0
    gpu_hours: float = 0.0


def shape(bb: Backbone) -> object:
    from micebench.models.flops import Shape

    return Shape(bb.layers, bb.hidden, bb.ffn, bb.positions)


def parameters(family: str, bb: Backbone = MINILM_L12) -> int:
    """Parameters of a student: embeddings + the layers it keeps (+ MICE's cross-attention copies)."""
    h = bb.hidden
    embeddings = (bb.vocab + bb.positions + 2) * h + 2 * h
    per_layer = 4 * (h * h + h) + 2 * h * bb.ffn + bb.ffn + h + 4 * h
    head = h * h + h + h + 1
    if family.startswith("mice-l"):
        k, m = (int(x) for x in family.removeprefix("mice-l").split("+"))
        return embeddings + (k + m) * per_layer + m * 4 * (h * h + h) + head
    if family == "colbert":
        return embeddings + bb.layers * per_layer + h * 128
    return embeddings + bb.layers * per_layer + head


def tokens(words: float, cap: int) -> int:
    return max(3, min(cap, round(words * TOKENS_PER_WORD)))


def pair_flops(
    family: str, query_words: float, doc_words: float, max_length: int, store: str = "none", bb: Backbone = MINILM_L12
) -> float:
    """Forward FLOPs of one (query, document) pair (micebench's analytic model, batch 64 for the query side)."""
    from micebench.models import flops

    q, d = tokens(query_words, 64), tokens(doc_words, max_length)
    s = shape(bb)
    if family.startswith("mice-l"):
        k, m = (int(x) for x in family.removeprefix("mice-l").split("+"))
        return flops.mice(q, d, s, k, m, 64, store)
    if family == "colbert":
        return flops.colbert(q, d, s, 128, 64, store)
    return flops.cross_encoder(q, d, s)


def gpu_hours(total_flops: float) -> float:
    return total_flops / H100_FLOPS / 3600


def training(family: str, steps: int, batch: int, seeds: int, max_length: int, every: int, top_k: int,
             facts: dict, bb: Backbone = MINILM_L12) -> Cost:  # fmt: skip
    """Checkpoints (best/ in fp32 + last/ with AdamW's two moments) and GPU time (forward + backward = 3 forward
    passes over 2 x batch pairs per step, padded), validation included."""
    _, _, qw, dw = facts["msmarco-dev"]
    per_step = 3 * 2 * batch * pair_flops(family, qw * PADDING, dw * PADDING, max_length, bb=bb)
    vq, _, vqw, vdw = facts["beir/nfcorpus/dev"]
    validation = (steps // every) * vq * min(top_k, 20) * pair_flops(family, vqw, vdw, max_length, bb=bb)
    checkpoint = parameters(family, bb) * (4 + 12) + 2e6
    return Cost(seeds * checkpoint, seeds * gpu_hours(steps * per_step + validation))


def pairs(dataset: str, top_k: int, facts: dict) -> int:
    queries, docs, _, _ = facts[dataset]
    return queries * min(top_k, docs)


def evaluation(rankers: list[tuple[str, str]], datasets: list[str], seeds: int, top_k: int, max_length: int,
               facts: dict, queries: int | None = None, bb: Backbone = MINILM_L12) -> Cost:  # fmt: skip
    """Run files of every (ranker, dataset, seed) and the GPU time of scoring their pairs; `rankers` are (family,
    store mode) with family "" for BM25 (no GPU); `queries` limits the count (an efficiency sample)."""
    disk = hours = 0.0
    for dataset in datasets:
        n, docs, qw, dw = facts[dataset]
        count = (min(n, queries) if queries else n) * min(top_k, docs)
        for family, store in rankers:
            disk += seeds * (count * RUN_LINE_BYTES + RESULT_FOLDER_BYTES)
            if family:
                hours += seeds * gpu_hours(count * pair_flops(family, qw, dw, max_length, store, bb))
    return Cost(disk, hours)


def store(family: str, queries: int, top_k: int, dataset: str, max_length: int, facts: dict,
          bb: Backbone = MINILM_L12) -> Cost:  # fmt: skip
    """A candidate store of `queries` queries x top-k documents (all distinct: an upper bound), fp16; MICE's
    per-token bytes scale with the hidden size (measured at 384)."""
    n, docs, _, dw = facts[dataset]
    documents = min(n, queries) * min(top_k, docs)
    per_token = COLBERT_BYTES_PER_TOKEN if family == "colbert" else STATE_BYTES_PER_TOKEN * bb.hidden / 384
    encode = pair_flops("colbert", 0, dw, max_length, bb=bb) if family == "colbert" else 0.0
    if family.startswith("mice-l"):
        from micebench.models import flops

        k = int(family.removeprefix("mice-l").split("+")[0])
        encode = k * flops.layer(tokens(dw, max_length), shape(bb))
    return Cost(documents * tokens(dw, max_length) * per_token, gpu_hours(documents * encode))


def caches(datasets: list[str], facts: dict) -> Cost:
    """ir_datasets' downloads and docstores (its own download sizes) and one bm25s index per dataset id."""
    import ir_datasets

    downloads = json.loads((Path(ir_datasets.__file__).parent / "etc" / "downloads.json").read_text())
    wanted = {"collectionandqueries", "queries", "train/qrels", "dev/scoreddocs", "trec-dl-2019/qrels",
              "trec-dl-2019/queries", "trec-dl-2019/scoreddocs", "trec-dl-2020/queries", "trec-dl-2020/qrels",
              "trec-dl-2020/scoreddocs"}  # fmt: skip
    disk = sum(v.get("size_hint", 0) for k, v in downloads["msmarco-passage"].items() if k in wanted)
    disk += MSMARCO_EXTRACTED
    from micebench.data.registry import SHORT_NAMES

    for name in datasets:
        short = SHORT_NAMES.get(name)
        if short is not None and short.group == "beir":
            key = short.irds_id.removeprefix("beir/").removesuffix("/test")
            disk += (1 + BEIR_CACHE_FACTOR) * downloads["beir"].get(key, {}).get("size_hint", 0)
    for name in [*datasets, "beir/nfcorpus/dev"]:
        _, docs, _, dw = facts[name]
        disk += docs * dw * BM25_BYTES_PER_WORD
    return Cost(disk, 0.0)


def smoke_caches(root: Path) -> Cost:
    """The smoke's caches: its fixture files again as ir_datasets docstores and BM25 indexes (a bound)."""
    return Cost(2 * sum(p.stat().st_size for p in root.rglob("*") if p.is_file()), 0.0)


def fixture_facts(root: Path) -> dict[str, tuple[int, int, float, float]]:
    """The same facts counted on the smoke's fixture files (so the smoke checks its own disk need)."""
    facts = {}
    from micebench.data.registry import SHORT_NAMES

    def words(texts: list[str]) -> float:
        return sum(len(t.split()) for t in texts) / max(1, len(texts))

    collection = (root / "msmarco-passage" / "collection.tsv").read_text().splitlines()
    passages = [line.split("\t", 1)[1] for line in collection]
    for name, folder in (("msmarco-dev", "dev/small"), ("trec-dl-19", "trec-dl-2019"), ("trec-dl-20", "trec-dl-2020")):
        qrels = (root / "msmarco-passage" / folder / "qrels").read_text().split()
        queries = len({qrels[i] for i in range(0, len(qrels), 4)})
        facts[name] = (queries, len(passages), 3.0, words(passages))
    for name, short in SHORT_NAMES.items():
        if short.group == "beir":
            facts[name] = _beir_facts(root, short.irds_id)
    facts["beir/nfcorpus/dev"] = _beir_facts(root, "beir/nfcorpus/dev")
    return facts


def _beir_facts(root: Path, irds_id: str) -> tuple[int, int, float, float]:
    from full_smoke import BEIR

    folder, split, _, _ = BEIR[irds_id]
    base = root / "beir" / folder
    docs = [json.loads(line) for line in (base / "corpus.jsonl").read_text().splitlines()]
    rows = (base / "qrels" / f"{split or 'test'}.tsv").read_text().splitlines()[1:]
    text = [f"{d['title']} {d['text']}" for d in docs]
    return (len({r.split()[0] for r in rows}), len(docs), 3.0, sum(len(t.split()) for t in text) / len(text))


def free_bytes(path: Path) -> int:
    """Free space of the filesystem that holds `path` (its nearest existing parent)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def human(nbytes: float) -> str:
    return f"{nbytes / GB:,.1f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:,.1f} MB"


def sample_run(source: Path, queries: int, output: Path) -> int:
    """Write the first `queries` query ids (sorted) of a TREC run file, all their lines: the efficiency sample."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    qids = sorted({line.split(None, 1)[0] for line in lines if line.strip()})[:queries]
    keep = set(qids)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(line for line in lines if line.split(None, 1)[0:1] and line.split(None, 1)[0] in keep))
    tmp.replace(output)
    print(f"{len(qids)} queries of {source} written to {output}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "sample-run" and argv[2].isdigit():
        source = Path(argv[1])
        if not source.is_file():
            found = sorted(source.rglob("run.trec")) if source.is_dir() else []
            if not found:
                print(f"full_plan: no run file at {source}", file=sys.stderr)
                return 2
            source = found[0]
        return sample_run(source, int(argv[2]), Path(argv[3]))
    print("usage: python benchmarks/full_plan.py sample-run RUN_FILE|FOLDER QUERIES OUT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
