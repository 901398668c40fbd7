"""Bad inputs to the newest surfaces, tried as a new user would: NanoBEIR files (both hub layouts, read from local
parquet files written here; the hub is never reached), the Python API's cross-encoder heads and the PyTerrier
`Reranker`'s frames and stores. Each is one line naming the problem (exit 2 on the command line) with nothing
written, or a correct result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("datasets")

import pandas as pd  # noqa: E402

from micebench.errors import MicebenchError  # noqa: E402
from tests.conftest import write_beir  # noqa: E402
from tests.test_cli import cli  # noqa: E402
from tests.test_nanobeir import CORPUS, QUERIES, RELEVANCE, write_nano_set, write_nanobeir_en  # noqa: E402

L2 = 1 / math.log2(3)


def _one_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert message in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1, err


def _refused(error: pytest.ExceptionInfo, message: str) -> None:
    text = str(error.value)
    assert message in text, text
    assert "\n" not in text, text


# -- NanoBEIR ------------------------------------------------------------------------------------------------------
@pytest.fixture
def nano_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty MICEBENCH_NANOBEIR_DIR (each test writes the files it needs)."""
    root = tmp_path / "nanobeir"
    root.mkdir()
    monkeypatch.setenv("MICEBENCH_NANOBEIR_DIR", str(root))
    monkeypatch.delenv("MICEBENCH_NANOBEIR_LAYOUT", raising=False)
    return root


def _per_set(root: Path, repo: str = "NanoSciFact-bm25", **tables: pd.DataFrame) -> Path:
    """The per-set layout of one set, with some tables replaced."""
    write_nano_set(root, repo)
    for config, frame in tables.items():
        frame.to_parquet(root / repo / config / "train-00000-of-00001.parquet", index=False)
    return root / repo


def _relevance(**column: list) -> pd.DataFrame:
    frame = pd.DataFrame(RELEVANCE, columns=["query-id", "positive-corpus-ids", "bm25-ranked-ids"])
    for name, values in column.items():
        frame[name] = pd.Series(values, dtype=object)
    return frame


def _run_nano(capsys, tmp_path: Path, dataset: str = "nano-scifact") -> tuple[int, str, str]:
    return cli(capsys, "run", "--model", "first-stage", "--dataset", dataset, "-o", str(tmp_path / "out"))


def _nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


def test_a_relevance_column_of_stringified_lists_reads_as_the_lists(capsys, tmp_path, nano_root):
    """`"['d1', 'd7']"` (a CSV round trip) is the list it writes, not ten characters: the hand-computed nDCG."""
    texts = [str(p) for _, p, _ in RELEVANCE]
    _per_set(nano_root, relevance=_relevance(**{"positive-corpus-ids": texts}))
    code, _, err = _run_nano(capsys, tmp_path)
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "out" / "nano-scifact" / "first-stage" / "perquery.tsv", sep="\t", dtype=str)
    got = dict(zip(frame["qid"], frame["nDCG@10"].astype(float), strict=True))
    assert got == pytest.approx({"q1": L2 / (1 + L2), "q2": 1.0, "q3": 0.0}, abs=1e-6)


NANO_CASES = [
    # (config, replacement table, message)
    (
        "relevance",
        _relevance(**{"positive-corpus-ids": ["d1, d7", "['d3']", "['d8']"]}),
        "'d1, d7' is not a list of ids",
    ),
    ("relevance", _relevance(**{"positive-corpus-ids": [None, ["d3"], ["d8"]]}), "positive-corpus-ids: no list of"),
    ("relevance", _relevance(**{"bm25-ranked-ids": [["d1"], None, ["d2"]]}), "row 2 (query 'q2') bm25-ranked-ids"),
    ("relevance", _relevance(**{"positive-corpus-ids": [[["d1"]], [["d3"]], [["d8"]]]}), "holds something other than"),
    ("relevance", _relevance(**{"positive-corpus-ids": ["[d1, d7", "['d3']", "['d8']"]}), "is not a list of ids"),
    ("relevance", _relevance(**{"query-id": ["q1", "q2", "q1"]}), "query id 'q1' appears twice (row 3)"),
    ("relevance", _relevance().drop(columns=["positive-corpus-ids"]), "has no column 'positive-corpus-ids'"),
    (
        "corpus",
        pd.DataFrame({"_id": [*CORPUS, "d3"], "text": [*CORPUS.values(), "another text"]}),
        "duplicate document id 'd3' (rows 3 and 9)",
    ),
    ("corpus", pd.DataFrame({"_id": ["d1", None], "text": ["a", "b"]}), "corpus: row 2 has no _id (null)"),
    (
        "queries",
        pd.DataFrame({"_id": [*QUERIES, "q2"], "text": [*QUERIES.values(), "again"]}),
        "duplicate query id 'q2' (rows 2 and 5)",
    ),
    ("queries", pd.DataFrame({"_id": ["q1", "q2"], "text": ["a", "b"]}), "query id 'q3' is not in queries"),
]


@pytest.mark.parametrize(("config", "table", "message"), NANO_CASES)
def test_malformed_nanobeir_tables(capsys, tmp_path, nano_root, config, table, message):
    _per_set(nano_root, **{config: table})
    code, _, err = _run_nano(capsys, tmp_path)
    _one_line(code, err, message)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "not parquet"])
def test_a_damaged_parquet_file_is_named(capsys, tmp_path, nano_root, damage):
    """One line naming the local file (not the hub id, not the datasets library's error twice)."""
    folder = _per_set(nano_root)
    path = folder / "corpus" / "train-00000-of-00001.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"_id,text\nd1,hello\n")
    code, _, err = _run_nano(capsys, tmp_path)
    _one_line(code, err, f"{path}: not a readable parquet file")
    assert "sentence-transformers" not in err
    _nothing_written(tmp_path)


def test_datasets_where_reads_the_local_folder(capsys, nano_root):
    folder = _per_set(nano_root)
    code, out, err = cli(capsys, "datasets", "where", "nano-scifact")
    assert code == 0 and out.split() == ["nano-scifact", "local", str(folder.resolve())], (out, err)
    write_nanobeir_en(nano_root, "NanoSciFact")  # both layouts present: the current one is read
    code, out, _ = cli(capsys, "datasets", "where", "nano-scifact")
    assert code == 0 and out.split()[2] == f"{(nano_root / 'NanoBEIR-en').resolve()}@NanoSciFact"


def test_datasets_where_names_a_set_missing_from_the_local_folder(capsys, nano_root):
    _per_set(nano_root)
    code, _, err = cli(capsys, "datasets", "where", "nano-nq")
    _one_line(code, err, "neither NanoBEIR-en/<subset>/NanoNQ-*.parquet nor NanoNQ-bm25/<config>/*.parquet")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_suite_checks_every_member_before_writing_anything(capsys, tmp_path, nano_root, damage):
    from micebench.data.nanobeir import NANO_SETS

    for nano in NANO_SETS.values():
        write_nano_set(nano_root, nano.repo)
    fifth = nano_root / list(NANO_SETS.values())[4].repo / "relevance" / "train-00000-of-00001.parquet"
    if damage == "missing":
        fifth.unlink()
    else:
        fifth.write_bytes(fifth.read_bytes()[:100])
    code, _, err = _run_nano(capsys, tmp_path, "nanobeir")
    message = f"no {fifth.parent.parent.name}/relevance/*.parquet" if damage == "missing" else "not a readable parquet"
    _one_line(code, err, message)
    assert not (tmp_path / "out").exists()  # neither a member's result nor experiment.json


def test_an_unknown_layout_is_refused(capsys, tmp_path, nano_root, monkeypatch):
    _per_set(nano_root)
    monkeypatch.setenv("MICEBENCH_NANOBEIR_LAYOUT", "nanobeir-fr")
    code, _, err = _run_nano(capsys, tmp_path)
    _one_line(
        code, err, "MICEBENCH_NANOBEIR_LAYOUT='nanobeir-fr' is not a NanoBEIR layout (use nanobeir-en or per-set)"
    )


def test_the_older_layout_asked_for_where_only_the_current_one_is(capsys, tmp_path, nano_root, monkeypatch):
    write_nanobeir_en(nano_root, "NanoSciFact")
    monkeypatch.setenv("MICEBENCH_NANOBEIR_LAYOUT", "per-set")
    code, _, err = _run_nano(capsys, tmp_path)
    _one_line(code, err, "no NanoSciFact-bm25/corpus/*.parquet under")
    _nothing_written(tmp_path)


def _nanobeir_en(root: Path, subset: str, frame: pd.DataFrame) -> None:
    write_nanobeir_en(root, "NanoSciFact")
    frame.to_parquet(root / "NanoBEIR-en" / subset / "NanoSciFact-00000-of-00001.parquet", index=False)


NANOBEIR_EN_CASES = [
    (
        "qrels",
        pd.DataFrame({"query-id": ["q1", "q2"], "corpus-id": ["d1", None]}),
        "row 2 (query 'q2') has no corpus-id (null)",
    ),
    ("qrels", pd.DataFrame({"query-id": ["q1"], "doc": ["d1"]}), "has no column 'corpus-id'"),
    ("bm25", pd.DataFrame({"query-id": ["q1", "q9x"], "corpus-ids": [["d1"], ["d2"]]}), "query id 'q9x' is not in"),
    ("bm25", pd.DataFrame({"query-id": ["q1"], "corpus-ids": ["d1 d2"]}), "'d1 d2' is not a list of ids"),
]


@pytest.mark.parametrize(("subset", "frame", "message"), NANOBEIR_EN_CASES)
def test_malformed_nanobeir_en_subsets(capsys, tmp_path, nano_root, subset, frame, message):
    _nanobeir_en(nano_root, subset, frame)
    code, _, err = _run_nano(capsys, tmp_path)
    _one_line(code, err, message)
    assert "NanoBEIR-en" in err
    _nothing_written(tmp_path)


def test_a_missing_nanobeir_en_subset_is_named(capsys, tmp_path, nano_root):
    write_nanobeir_en(nano_root, "NanoSciFact")
    (nano_root / "NanoBEIR-en" / "bm25" / "NanoSciFact-00000-of-00001.parquet").unlink()
    code, _, err = _run_nano(capsys, tmp_path)
    _one_line(code, err, "no NanoBEIR-en/bm25/NanoSciFact-*.parquet under")
    _nothing_written(tmp_path)


# -- the Python API: cross-encoder score heads ---------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path) -> Path:
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 3} and words"} for i in range(6)]
    queries = [{"_id": "q1", "text": "topic one"}, {"_id": "q2", "text": "topic two words"}]
    return write_beir(tmp_path / "small", corpus, queries, [("q1", "d1", 1), ("q2", "d2", 1)])


def test_run_refuses_a_checkpoint_without_a_trained_head(capsys, tmp_path, small, tiny_bert_encoder):
    args = ["run", "--model", "ce", "--checkpoint", tiny_bert_encoder, "--dataset", str(small), "--device", "cpu"]
    code, _, err = cli(capsys, *args, "-o", str(tmp_path / "out"))
    _one_line(code, err, "has no trained score head (classifier.bias, classifier.weight drawn afresh from seed 0)")
    assert "--untrained" in err and not (tmp_path / "out" / "small").exists()


def test_reranker_refuses_a_checkpoint_without_a_trained_head(tiny_bert_encoder):
    pytest.importorskip("pyterrier")
    from micebench.pyterrier import Reranker

    with pytest.raises(MicebenchError) as error:
        Reranker("mask2", checkpoint=tiny_bert_encoder, device="cpu")
    _refused(error, "has no trained score head")


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_head_seed_out_of_range(seed):
    from micebench import load_ranker

    with pytest.raises(MicebenchError) as error:
        load_ranker("ce", checkpoint="minilm-l6", head_seed=seed)
    _refused(error, f"head seed must be between 0 and 2**32 - 1 (got {seed})")


def test_the_api_scores_as_run_does_with_a_fresh_head(capsys, tmp_path, small, tiny_bert_encoder):
    """`run --untrained` (seed 0) and a `Reranker` built twice give the run file's scores: the head is drawn from
    the same seed, not from wherever the global generator stands."""
    pt = pytest.importorskip("pyterrier")
    import torch

    from micebench.data.trec import read_run
    from micebench.pyterrier import Reranker, first_stage

    args = ["run", "--model", "ce", "--checkpoint", tiny_bert_encoder, "--untrained", "--dataset", str(small)]
    code, _, err = cli(capsys, *args, "--device", "cpu", "--top-k", "4", "-o", str(tmp_path / "out"))
    assert code == 0, err
    (folder,) = (tmp_path / "out" / "small").iterdir()
    expected = read_run(folder / "run.trec")
    topics = pd.DataFrame({"qid": ["q1", "q2"], "query": ["topic one", "topic two words"]})
    for _ in range(2):
        torch.rand(7)  # the global generator moves between loads
        scored = (first_stage(str(small), top_k=4) >> Reranker("ce", checkpoint=tiny_bert_encoder, untrained=True))(
            topics
        )
        for qid, docno, score in scored[["qid", "docno", "score"]].itertuples(index=False):
            assert score == pytest.approx(expected[qid][docno], abs=1e-5)
    assert isinstance(scored, pd.DataFrame) and pt is not None


# -- the PyTerrier Reranker: frames ---------------------------------------------------------------------------------
FRAME_CASES = [
    # (rows of qid, query, docno, text; message)
    ([("q1", "fish", "d1", "a"), ("q1", "fish", "d2", float("nan"))], "row 1 (qid q1, docno d2): no text (a missing"),
    ([("q1", "fish", "d1", "a"), ("q1", None, "d2", "b")], "row 1 (qid q1, docno d2): no query"),
    ([("q1", "fish", None, "a")], "row 0 (qid q1): no docno"),
    ([("q1", "fish", "d1", "a"), ("q1", "wifi", "d2", "b")], "qid q1 carries two query texts ('fish' and 'wifi')"),
    (
        [("q1", "fish", "d1", "a"), ("q2", "wifi", "d1", "b"), ("q1", "fish", "d1", "c")],
        "row 2 (qid q1, docno d1): docno d1 appears twice under qid q1 with different texts",
    ),
]


@pytest.mark.parametrize(("rows", "message"), FRAME_CASES)
def test_a_reranker_frame_that_cannot_be_scored_as_given(tiny_bert_ce, rows, message):
    pytest.importorskip("pyterrier")
    from micebench.pyterrier import Reranker

    frame = pd.DataFrame(rows, columns=["qid", "query", "docno", "text"])
    with pytest.raises(MicebenchError) as error:
        Reranker("ce", checkpoint=tiny_bert_ce, device="cpu").transform(frame)
    _refused(error, message)


def test_the_same_document_twice_with_one_text_is_scored(tiny_bert_ce):
    pytest.importorskip("pyterrier")
    from micebench.pyterrier import Reranker

    frame = pd.DataFrame(
        [("q1", "fish", "d1", "a fish"), ("q2", "wifi", "d1", "a fish")], columns=["qid", "query", "docno", "text"]
    )
    scored = Reranker("ce", checkpoint=tiny_bert_ce, device="cpu").transform(frame)
    assert len(scored) == 2 and scored["score"].notna().all()


# -- the PyTerrier Reranker: a store of another collection ----------------------------------------------------------
@pytest.fixture(scope="module")
def store_setup(tmp_path_factory, tiny_bert_ce) -> dict[str, Path]:
    """A MICE store of collection `a`; `b` holds the same ids with other texts, `c` other ids."""
    import contextlib
    import io

    from micebench.cli import main
    from micebench.models.mice import MiceConfig
    from micebench.models.mice_io import convert_cross_encoder, save_mice

    root = tmp_path_factory.mktemp("sweep-store")
    queries = [{"_id": "q1", "text": "topic one"}]
    made = {}
    for name, prefix, words in (("a", "d", "fish tank water"), ("b", "d", "radio wifi band"), ("c", "x", "fish")):
        corpus = [{"_id": f"{prefix}{i}", "title": "", "text": f"topic {words} {i}"} for i in range(4)]
        made[name] = write_beir(root / name, corpus, queries, [("q1", f"{prefix}1", 1)])
    model, tokenizer = convert_cross_encoder(tiny_bert_ce, MiceConfig(1, 1))
    made["mice"] = save_mice(model, tokenizer, root / "mice")
    made["store"] = root / "store"
    args = ["precompute", "--model", "mice", "--checkpoint", str(made["mice"]), "--dataset", str(made["a"])]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([*args, "--device", "cpu", "-o", str(made["store"])])
        except SystemExit as exit_:
            assert not exit_.code
    return made


def _stored_reranker(made: dict[str, Path], **options):
    from micebench.pyterrier import Reranker

    return Reranker(
        "mice", checkpoint=str(made["mice"]), precomputed=str(made["store"]), untrained=True, device="cpu", **options
    )


def test_a_store_scores_its_own_collection(store_setup):
    pytest.importorskip("pyterrier")
    from micebench.pyterrier import first_stage, topics_and_qrels

    topics, _ = topics_and_qrels(str(store_setup["a"]))
    scored = (first_stage(str(store_setup["a"]), top_k=4) >> _stored_reranker(store_setup))(topics)
    assert len(scored) == 4 and scored["score"].notna().all()


def test_a_frame_of_another_collection_with_the_same_ids(store_setup):
    """The ids overlap: the store's documents would be scored silently; the texts tell them apart."""
    pytest.importorskip("pyterrier")
    from micebench.pyterrier import first_stage, topics_and_qrels

    topics, _ = topics_and_qrels(str(store_setup["b"]))
    frame = first_stage(str(store_setup["b"]), top_k=4)(topics)
    with pytest.raises(MicebenchError) as error:
        _stored_reranker(store_setup).transform(frame)
    _refused(error, "its text is not the text of")
    assert "'a', the collection the store" in str(error.value)


@pytest.mark.parametrize("how", ["dataset", "first_stage"])
def test_a_store_of_another_collection_is_refused_when_the_pipeline_is_built(store_setup, how):
    pytest.importorskip("pyterrier")
    from micebench.pyterrier import first_stage

    with pytest.raises(MicebenchError) as error:
        if how == "dataset":
            _stored_reranker(store_setup, dataset=str(store_setup["b"]))
        else:
            first_stage(str(store_setup["b"]), top_k=4, text=False) >> _stored_reranker(store_setup)
    _refused(error, "holds documents of 'a', not of 'b'")


def test_ids_a_store_lacks_are_not_only_an_extend_away(store_setup):
    pytest.importorskip("pyterrier")
    frame = pd.DataFrame({"qid": ["q1", "q1"], "query": ["fish", "fish"], "docno": ["x1", "x2"]})
    with pytest.raises(MicebenchError) as error:
        _stored_reranker(store_setup).transform(frame)
    _refused(error, "2 of 2 documents of the frame are not in the store")
    assert "built on 'a': if the frame comes from 'a', add them" in str(error.value)
    assert "a frame of another collection needs a store built on that collection" in str(error.value)
    json.dumps(str(error.value))  # a plain string


def test_the_hub_unreachable_is_one_line_naming_the_set_and_the_older_layout(capsys, tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'sentence-transformers/NanoBEIR-en' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("MICEBENCH_NANOBEIR_DIR", raising=False)
    monkeypatch.delenv("MICEBENCH_NANOBEIR_LAYOUT", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    code, _, err = _run_nano(capsys, tmp_path, "nano-quora")
    _one_line(code, err, "cannot load sentence-transformers/NanoBEIR-en (corpus, split NanoQuoraRetrieval)")
    assert "MICEBENCH_NANOBEIR_LAYOUT=per-set" in err
    _nothing_written(tmp_path)
