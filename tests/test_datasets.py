"""Dataset resolution and loading: local BEIR folders, the local mirror, ir_datasets ids."""

from __future__ import annotations

import gzip
import json

import pytest

from micebench.data import load_dataset, where
from micebench.errors import DataError, UnknownNameError
from tests.conftest import register_irds_tsv, write_beir


def _read_dummy(data_dir):
    corpus = [json.loads(line) for line in gzip.open(data_dir / "irds-dummy" / "corpus.jsonl.gz", "rt")]
    queries = [json.loads(line) for line in open(data_dir / "irds-dummy" / "queries.jsonl")]
    return corpus, queries


def test_local_folder_by_path(data_dir):
    ds = load_dataset(str(data_dir / "scifact"))
    assert ds.name == "scifact" and ds.split == "test"
    assert len(ds.judged_queries()) == 300
    assert sum(len(v) for v in ds.qrels().values()) == 339
    assert sum(1 for _ in ds.iter_docs()) == 5183
    texts = ds.doc_texts(["4983"])
    assert texts["4983"].startswith("Microstructural development of human newborn cerebral white matter")
    assert ds.relevance_level == 1


def test_split_selection(data_dir):
    train = load_dataset(str(data_dir / "scifact"), split="train")
    assert len(train.judged_queries()) == 809
    with pytest.raises(DataError, match="no qrels for split 'dev'"):
        load_dataset(str(data_dir / "scifact"), split="dev")


def test_short_names_resolve_to_the_mirror_then_ir_datasets(data_dir):
    assert where("trec-dl-19", data_dir) == ("local", str((data_dir / "trec-dl-2019-passage").resolve()))
    assert where("scifact", data_dir) == ("local", str((data_dir / "scifact").resolve()))
    assert where("cisi", data_dir)[0] == "local"  # mirror folders that are not paper datasets
    assert where("scifact", None) == ("ir_datasets", "beir/scifact/test")
    assert where("touche", None) == ("ir_datasets", "beir/webis-touche2020/v2")
    assert where("msmarco-passage/trec-dl-2019/judged", None) == (
        "ir_datasets",
        "msmarco-passage/trec-dl-2019/judged",
    )
    ds = load_dataset("trec-dl-19", data_dir)
    assert ds.name == "trec-dl-19" and ds.relevance_level == 2
    assert "bm25" in ds.candidate_names()


def test_mirror_from_environment(data_dir, monkeypatch):
    monkeypatch.setenv("MICEBENCH_DATA", str(data_dir))
    assert load_dataset("trec-dl-20").source.startswith("local:")


def test_unknown_and_missing_datasets(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown dataset 'no-such-collection'"):
        load_dataset("no-such-collection")
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset(str(tmp_path / "absent"))
    with pytest.raises(DataError, match="no corpus.jsonl"):
        (tmp_path / "empty").mkdir()
        load_dataset(str(tmp_path / "empty"))


def test_malformed_corpus_line_is_located(tmp_path):
    folder = write_beir(tmp_path / "c", [{"_id": "d1", "text": "a"}], [{"_id": "q", "text": "a"}], [("q", "d1", 1)])
    with open(folder / "corpus.jsonl", "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(DataError, match=r"corpus.jsonl:2: malformed JSON"):
        list(load_dataset(str(folder)).iter_docs())


def test_duplicate_document_ids_are_refused(tmp_path):
    docs = [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}]
    folder = write_beir(tmp_path / "c", docs, [{"_id": "q", "text": "a"}], [("q", "d1", 1)])
    with pytest.raises(DataError, match="duplicate document id 'd1'"):
        list(load_dataset(str(folder)).iter_docs())


def test_fingerprint_follows_the_corpus_content_not_its_path_or_times(tmp_path):
    """A copied folder (new path, new times) keeps its fingerprint (BM25 index, store resume); an edit changes it."""
    import os
    import shutil

    docs = [{"_id": f"d{i}", "text": f"document {i} " * 30} for i in range(3000)]  # over 1 MiB: head and tail
    folder = write_beir(tmp_path / "a", docs, [{"_id": "q", "text": "a"}], [("q", "d1", 1)])
    os.utime(folder / "corpus.jsonl", (1_000_000, 1_000_000))
    copy = shutil.copytree(folder, tmp_path / "b")  # copytree keeps times: change them as a plain copy would
    os.utime(copy / "corpus.jsonl", None)
    assert load_dataset(str(copy)).fingerprint() == load_dataset(str(folder)).fingerprint()
    text = (copy / "corpus.jsonl").read_text()
    assert text[-5] == "9"
    (copy / "corpus.jsonl").write_text(text[:-5] + "8" + text[-4:])  # the last document's text, same size
    assert load_dataset(str(copy)).fingerprint() != load_dataset(str(folder)).fingerprint()


def test_corpus_ids_without_parsing_texts_match_the_parsed_corpus(data_dir, tmp_path):
    """The ids-only pass gives every id a full JSON parse gives: on each mirrored corpus, and on lines whose id is
    not the first field, has escapes or is a number, with blank lines between."""
    from micebench.data.local import iter_corpus, iter_corpus_ids

    for corpus in sorted(data_dir.glob("*/corpus.jsonl.gz")):
        assert list(iter_corpus_ids(corpus)) == [docno for docno, _ in iter_corpus(corpus)], corpus
    lines = [
        '{"_id": "d1", "text": "a \\"quoted\\" text"}',
        '{"title": "t", "_id": "d2", "text": "b"}',
        '  {"_id" : "d\\"3" , "text": "c"}',
        "",
        '{"_id": 4, "text": "d"}',
        '{"_id":"d\\u00e95"}',
        '{"_id": "d6", "_id_note": "x"}',
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    ids = list(iter_corpus_ids(tmp_path / "corpus.jsonl"))
    assert ids == [docno for docno, _ in iter_corpus(tmp_path / "corpus.jsonl")]
    assert ids == ["d1", "d2", 'd"3', "4", "d\u00e95", "d6"]


def test_candidate_ids_are_checked_without_texts_and_duplicates_refused(tmp_path):
    docs = [{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}]
    folder = write_beir(tmp_path / "c", docs, [{"_id": "q", "text": "a"}], [("q", "d1", 1)])
    dataset = load_dataset(str(folder))
    assert dataset.absent_docs(["d2", "x9", "d1", "x1", "x9"]) == ["x1", "x9"]
    with open(folder / "corpus.jsonl", "a") as handle:
        handle.write('{"_id": "d1", "text": "again"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:3: duplicate document id 'd1' \(first on line 1\)"):
        dataset.absent_docs(["d1"])


def test_ir_datasets_adapter_matches_the_local_folder(data_dir, tmp_path):
    """Register the dummy collection with ir_datasets (from local TSV files) and compare both loaders."""
    from micebench.data.irds import IrDatasetsDataset

    corpus, queries = _read_dummy(data_dir)
    qrels_lines = (data_dir / "irds-dummy" / "qrels" / "test.tsv").read_text().splitlines()[1:]
    qrels = [tuple(line.split("\t")) for line in qrels_lines]
    docs = {d["_id"]: d["text"] for d in corpus}
    dataset_id = register_irds_tsv(tmp_path, "dummy", docs, {q["_id"]: q["text"] for q in queries}, qrels)
    irds = load_dataset(dataset_id)
    assert isinstance(irds, IrDatasetsDataset)
    local = load_dataset(str(data_dir / "irds-dummy"))
    assert irds.queries() == local.queries()
    assert irds.qrels() == local.qrels()
    wanted = [d["_id"] for d in corpus[:5]]
    assert irds.doc_texts(wanted) == local.doc_texts(wanted)
    assert dict(irds.iter_docs()) == dict(local.iter_docs())
