"""Faults end to end: each is one line with its exit status (2 bad input, 1 the machine, 130 Ctrl-C), and a failed
run leaves nothing behind but progress that `--resume` continues."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import register_irds_tsv, write_beir
from tests.test_cli import cli

TEXTS = [
    "goldfish grow with the size of their tank and the quality of the water",
    "a wireless network sends data over radio waves between devices",
    "koi and goldfish are kept in garden ponds all year round",
    "the library catalogue lists every book by author and title",
    "clean water and a filter keep aquarium fish healthy",
    "routers forward packets between computer networks",
]
QUERIES = {"q1": "goldfish tank water", "q2": "radio network", "q3": "fish pond"}
SHIPPED = {"q1": ["d0", "d4", "d2"], "q2": ["d1", "d5", "d3"], "q3": ["d2", "d0", "d4"]}


def _collection(folder: Path, shipped: dict[str, list[str]] | None = None) -> Path:
    """A tiny BEIR folder with a shipped bm25 run of three candidates per query."""
    corpus = [{"_id": f"d{i}", "title": "", "text": text} for i, text in enumerate(TEXTS)]
    queries = [{"_id": q, "text": text} for q, text in QUERIES.items()]
    write_beir(folder, corpus, queries, [("q1", "d0", 1), ("q2", "d1", 1), ("q3", "d2", 1)])
    (folder / "candidates").mkdir(exist_ok=True)
    lines = [
        f"{q} Q0 {d} {rank} {10 - rank}.0 bm25"
        for q, docs in (shipped or SHIPPED).items()
        for rank, d in enumerate(docs, start=1)
    ]
    (folder / "candidates" / "bm25.trec").write_text("\n".join(lines) + "\n")
    return folder


def _leftovers(root: Path) -> list[str]:
    """Everything under `root` (relative paths), to show that a failed run left nothing."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _damaged_copy(source: str, target: Path, damage: str) -> Path:
    """A copy of a checkpoint folder with its weights cut in half or its config.json made invalid JSON."""
    shutil.copytree(source, target)
    if damage == "truncated":
        weights = target / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    else:
        (target / "config.json").write_text('{"model_type": "bert", ')
    return target


# -- damaged checkpoints ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["ce", "dense"])
def test_truncated_weights_name_the_file(capsys, tmp_path, model, tiny_bert_ce, tiny_bert_encoder):
    source = tiny_bert_ce if model == "ce" else tiny_bert_encoder
    size = (Path(source) / "model.safetensors").stat().st_size
    checkpoint = _damaged_copy(source, tmp_path / "weights", "truncated")
    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    args = ["run", "--model", model, "--checkpoint", str(checkpoint), "--dataset", str(folder), "--device", "cpu"]
    code, _, err = cli(capsys, *args, "-o", str(out))
    weights = checkpoint / "model.safetensors"
    assert code == 2
    assert err == (
        f"error: cannot load model '{checkpoint}': damaged file {weights} (truncated: {size // 2} of {size} bytes)\n"
    )
    assert not out.exists()


def test_config_that_is_not_json_names_the_file(capsys, tmp_path, tiny_bert_ce, tiny_bert_encoder):
    folder = _collection(tmp_path / "small")
    config_error = "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 24"
    checkpoint = _damaged_copy(tiny_bert_ce, tmp_path / "ce", "config")
    args = ["--checkpoint", str(checkpoint), "--dataset", str(folder), "--device", "cpu", "-o", str(tmp_path / "out")]
    code, _, err = cli(capsys, "run", "--model", "ce", *args)
    assert code == 2
    assert err == f"error: cannot load model '{checkpoint}': damaged file {checkpoint}/config.json ({config_error})\n"
    assert not (tmp_path / "out").exists()

    encoder = _damaged_copy(tiny_bert_encoder, tmp_path / "encoder", "config")
    store = tmp_path / "store"
    code, _, err = cli(
        capsys, "precompute", "--model", "colbert", "--checkpoint", str(encoder), "--dataset", str(folder),
        "--device", "cpu", "-o", str(store),
    )  # fmt: skip
    assert code == 2
    assert err == f"error: cannot load model '{encoder}': damaged file {encoder}/config.json ({config_error})\n"
    assert not store.exists()


# -- the machine: read-only, not a folder, full disk -----------------------------------------------------------------


def _refuse_writes_under(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `root` read-only; as root (who writes anywhere) folder creation under it is refused by a patch too."""
    root.chmod(0o555)
    if os.geteuid() != 0:
        return
    mkdir = Path.mkdir

    def refusing_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.parent == root:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refusing_mkdir)


def test_read_only_output_folder(capsys, tmp_path, monkeypatch):
    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    out.mkdir()
    _refuse_writes_under(out, monkeypatch)
    try:
        code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(folder), "-o", str(out))
    finally:
        out.chmod(0o755)
    assert code == 1
    assert err == f"error: cannot write {out}/small/bm25: Permission denied ({out}/small)\n"
    assert _leftovers(out) == []


def test_output_path_under_a_regular_file(capsys, tmp_path):
    folder = _collection(tmp_path / "small")
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me\n")
    out = regular / "results"
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(folder), "-o", str(out))
    assert code == 1
    assert err == f"error: cannot write {out}/small/bm25: Not a directory ({out}/small)\n"
    assert regular.read_text() == "keep me\n"


class _FullDisk:
    """A text handle whose writes fail with ENOSPC after the first few bytes reach the file."""

    def __init__(self, handle: io.TextIOBase):
        self._handle = handle

    def write(self, text: str) -> int:
        self._handle.write(text[:10])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def writelines(self, lines: object) -> None:
        for line in lines:  # type: ignore[attr-defined]
            self.write(line)

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def _disk_full_in(marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes to files whose folder name contains `marker` run out of space (builtins.open and io.open)."""
    real = io.open

    def full_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real(file, mode, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and marker in Path(file).parent.name and "b" not in mode:
            return _FullDisk(handle) if set(mode) & {"w", "a"} else handle
        return handle

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)


def _records_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """BM25 runs record progress as model rankers' runs do (a cheap stand-in for them; by itself it records none)."""
    from micebench.rankers.first_stage import FirstStageRanker

    monkeypatch.setattr(FirstStageRanker, "records_progress", True)


def test_full_disk_while_writing_the_result(capsys, tmp_path, monkeypatch):
    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    args = ["run", "--model", "bm25", "--dataset", str(folder), "-o", str(out)]
    _records_progress(monkeypatch)
    with monkeypatch.context() as patch:
        _disk_full_in(".bm25.tmp-", patch)
        code, _, err = cli(capsys, *args)
    partial = out / "small" / ".bm25.partial"
    assert code == 1
    assert err == (
        f"error: cannot write {out}/small/bm25: No space left on device; 3 scored queries are kept in {partial}; "
        "rerun with --resume to continue\n"
    )
    assert _leftovers(out / "small") == [".bm25.partial", ".bm25.partial/config.json", ".bm25.partial/scores-rank0.tsv"]
    code, _, err = cli(capsys, *args, "--resume")
    assert code == 0, err
    assert _leftovers(out / "small") == ["bm25", "bm25/manifest.json", "bm25/metrics.json", "bm25/perquery.tsv",
                                         "bm25/run.trec"]  # fmt: skip


def test_full_disk_while_writing_a_run_without_progress_leaves_nothing(capsys, tmp_path, monkeypatch):
    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    args = ["run", "--model", "bm25", "--dataset", str(folder), "-o", str(out)]
    with monkeypatch.context() as patch:
        _disk_full_in(".bm25.tmp-", patch)
        code, _, err = cli(capsys, *args)
    assert code == 1
    assert err == f"error: cannot write {out}/small/bm25: No space left on device\n"
    assert _leftovers(out / "small") == []
    code, _, err = cli(capsys, *args)
    assert code == 0, err


# -- failed runs leave nothing but what --resume continues ------------------------------------------------------------


def _scoring_raises(patch: pytest.MonkeyPatch, error: BaseException) -> None:
    """BM25 runs whose scoring raises `error`."""
    from micebench.rankers.first_stage import FirstStageRanker

    def raising(self: object, candidates: object) -> object:
        raise error

    patch.setattr(FirstStageRanker, "score_candidates", raising)


def test_a_failure_before_any_score_leaves_nothing_and_the_rerun_needs_no_overwrite(capsys, tmp_path, monkeypatch):
    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    args = ["run", "--model", "bm25", "--dataset", str(folder), "-o", str(out)]
    with monkeypatch.context() as patch:
        _scoring_raises(patch, RuntimeError("scoring failed"))
        with pytest.raises(RuntimeError, match="scoring failed"):
            cli(capsys, *args)
    assert not out.exists()
    code, _, err = cli(capsys, *args)
    assert code == 0, err


def test_a_failure_after_some_chunks_keeps_them_for_resume(capsys, tmp_path, monkeypatch):
    from micebench.runstate import PartialScores

    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    args = ["run", "--model", "bm25", "--dataset", str(folder), "-o", str(out), "--chunk-queries", "1"]
    _records_progress(monkeypatch)
    append = PartialScores._append  # the write itself: `append` wraps its faults
    calls = []

    def fails_second(self: PartialScores, rows: list) -> None:
        calls.append(len(rows))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        append(self, rows)

    with monkeypatch.context() as patch:
        patch.setattr(PartialScores, "_append", fails_second)
        code, _, err = cli(capsys, *args)
    partial = out / "small" / ".bm25.partial"
    assert code == 1
    assert err == (
        f"error: cannot write {partial}: No space left on device; 1 scored query is kept in {partial}; "
        "rerun with --resume to continue\n"
    )
    assert not (out / "small" / "bm25").exists()
    code, _, err = cli(capsys, *args)
    assert code == 2 and "use --resume to continue it" in err
    code, _, err = cli(capsys, *args, "--resume")
    assert code == 0, err
    resumed = (out / "small" / "bm25" / "run.trec").read_text()
    code, _, err = cli(capsys, *args[:-2], "-o", str(tmp_path / "fresh"))
    assert code == 0, err
    assert resumed == (tmp_path / "fresh" / "small" / "bm25" / "run.trec").read_text()
    assert not partial.exists()


# -- silently wrong results -----------------------------------------------------------------------------------------


def test_max_length_too_small_for_any_document_token_is_refused(capsys, tmp_path, tiny_bert_ce):
    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    args = ["run", "--model", "ce", "--checkpoint", tiny_bert_ce, "--dataset", str(folder), "--device", "cpu"]
    code, _, err = cli(capsys, *args, "--max-length", "3", "-o", str(out))
    assert code == 2
    assert err == "error: --max-length 3 cannot hold [CLS] query [SEP] document [SEP]: use at least 5 tokens\n"
    assert not out.exists()
    code, _, err = cli(capsys, *args, "--max-length", "32", "-o", str(out))
    assert code == 0, err


def _store(capsys, dataset: str, store: Path, encoder: str, top_k: int, *extra: str) -> None:
    """Precompute a ColBERT store of the shipped bm25 top-`top_k` candidates of `dataset`."""
    code, _, err = cli(
        capsys, "precompute", "--model", "colbert", "--checkpoint", encoder, "--dataset", dataset, "--device", "cpu",
        "--first-stage", "dataset:bm25", "--top-k", str(top_k), "-o", str(store), *extra,
    )  # fmt: skip
    assert code == 0, err


def _run_stored(capsys, dataset: str, store: Path, encoder: str, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli(
        capsys, "run", "--model", "colbert", "--checkpoint", encoder, "--dataset", dataset, "--device", "cpu",
        "--precomputed", str(store), "-o", str(out), *extra,
    )  # fmt: skip


def test_a_store_of_another_corpus_is_refused(capsys, tmp_path, tiny_bert_encoder):
    """Same document ids, other texts: refused. A byte-identical copy of the corpus elsewhere is the same corpus."""
    first = _collection(tmp_path / "first")
    second = _collection(tmp_path / "second")
    copy = shutil.copytree(first, tmp_path / "copy")
    corpus = second / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace('"text": "', '"text": "edited '))
    store = tmp_path / "store"
    _store(capsys, str(first), store, tiny_bert_encoder, 3)
    out = tmp_path / "out"
    code, _, err = _run_stored(capsys, str(copy), store, tiny_bert_encoder, tmp_path / "out-copy")
    assert code == 0, err
    code, _, err = _run_stored(capsys, str(second), store, tiny_bert_encoder, out)
    assert code == 2
    assert err == f"error: store {store} holds documents of 'first', not of 'second': precompute a store for 'second'\n"
    assert not out.exists()
    code, _, err = _run_stored(capsys, str(first), store, tiny_bert_encoder, out)
    assert code == 0, err


def test_candidates_the_store_lacks_are_named_before_scoring(capsys, tmp_path, tiny_bert_encoder):
    folder = _collection(tmp_path / "small")
    store = tmp_path / "store"
    _store(capsys, str(folder), store, tiny_bert_encoder, 1)  # d0, d1, d2: the first candidate of each query
    out = tmp_path / "out"
    code, _, err = _run_stored(capsys, str(folder), store, tiny_bert_encoder, out, "--top-k", "2")
    assert code == 2
    assert err == (
        f"error: 2 of 5 candidate documents are not in the store {store} (e.g. 'd4'): "
        "add them with `micebench precompute --extend`\n"
    )
    assert not out.exists()


def test_a_trec_dl_19_store_serves_trec_dl_19_and_not_cisi(capsys, tmp_path, data_dir, tiny_bert_encoder):
    store = tmp_path / "store"
    _store(capsys, "trec-dl-19", store, tiny_bert_encoder, 2, "--data-dir", str(data_dir))
    out = tmp_path / "out"
    code, _, err = _run_stored(capsys, "trec-dl-19", store, tiny_bert_encoder, out, "--top-k", "2", "--data-dir",
                               str(data_dir))  # fmt: skip
    assert code == 0, err
    path = str(data_dir / "trec-dl-2019-passage")
    code, _, err = _run_stored(capsys, path, store, tiny_bert_encoder, out, "--top-k", "2")
    assert code == 0, err
    code, _, err = _run_stored(capsys, "cisi", store, tiny_bert_encoder, out, "--top-k", "2", "--data-dir",
                               str(data_dir))  # fmt: skip
    assert code == 2
    assert (
        err == f"error: store {store} holds documents of 'trec-dl-19', not of 'cisi': precompute a store for 'cisi'\n"
    )
    assert not (out / "cisi").exists()


@pytest.mark.parametrize("model", ["first-stage", "bm25"])
def test_candidates_absent_from_the_corpus_without_reading_texts(capsys, tmp_path, monkeypatch, model):
    from micebench.data import local

    def no_texts(*args: object, **kwargs: object) -> object:
        raise AssertionError("texts read")

    monkeypatch.setattr(local, "iter_corpus", no_texts)  # ids only: no document text is parsed
    shipped = {**SHIPPED, "q2": ["d1", "zz9", "d3"]}
    folder = _collection(tmp_path / "small", shipped)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--model", model, "--dataset", str(folder), "-o", str(out))
    assert code == 2
    assert err == (
        "error: 1 candidate documents are not in the corpus of 'small' (e.g. 'zz9'): "
        "the first stage does not match this collection\n"
    )
    assert not out.exists()


def test_candidates_drawn_from_the_corpus_itself_are_not_checked_again(capsys, tmp_path, monkeypatch):
    from micebench.data.local import LocalBeirDataset

    def no_pass(self: object, docnos: object) -> list[str]:
        raise AssertionError("a corpus pass")

    monkeypatch.setattr(LocalBeirDataset, "absent_docs", no_pass)
    folder = _collection(tmp_path / "small")
    args = ["run", "--model", "bm25", "--dataset", str(folder), "-o", str(tmp_path / "out"), "--first-stage"]
    code, _, err = cli(capsys, *args, "bm25")  # retrieved from this corpus's own BM25 index
    assert code == 0, err
    with pytest.raises(AssertionError, match="a corpus pass"):  # a shipped run is checked
        cli(capsys, *args, "dataset:bm25", "--overwrite")


def test_candidates_absent_from_an_ir_datasets_corpus_are_looked_up(capsys, tmp_path):
    """The same check by lookups (docs_store) for a corpus with random access, here an ir_datasets id."""
    docs = {f"d{i}": text for i, text in enumerate(TEXTS)}
    qrels = [("q1", "d0", 1), ("q2", "d1", 1), ("q3", "d2", 1)]
    dataset_id = register_irds_tsv(tmp_path, "faults", docs, QUERIES, qrels)
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d0 1 2.0 x\nq1 Q0 d4 2 1.0 x\nq2 Q0 gone7 1 2.0 x\nq2 Q0 d1 2 1.0 x\n")
    out = tmp_path / "out"
    args = ["run", "--model", "first-stage", "--dataset", dataset_id, "--first-stage", str(run), "-o", str(out)]
    code, _, err = cli(capsys, *args)
    assert code == 2  # (ir_datasets reports building its docstore on stderr first)
    assert err.splitlines()[-1] == (
        f"error: 1 candidate documents are not in the corpus of '{dataset_id}' (e.g. 'gone7'): "
        "the first stage does not match this collection"
    )
    assert not out.exists()
    run.write_text("q1 Q0 d0 1 2.0 x\nq1 Q0 d4 2 1.0 x\nq2 Q0 d5 1 2.0 x\nq2 Q0 d1 2 1.0 x\n")
    code, _, err = cli(capsys, *args)
    assert code == 0, err


# -- Ctrl-C and the printing of errors --------------------------------------------------------------------------------


def test_ctrl_c_names_the_command_that_resumes(capsys, tmp_path, monkeypatch):
    folder = _collection(tmp_path / "small")
    out = tmp_path / "out"
    args = ["run", "--model", "bm25", "--dataset", str(folder), "-o", str(out)]
    with monkeypatch.context() as patch:
        _scoring_raises(patch, KeyboardInterrupt())
        code, _, err = cli(capsys, *args)
    assert code == 130
    assert err == f"interrupted; to continue: micebench run --model bm25 --dataset {folder} -o {out} --resume\n"
    assert not out.exists()

    import micebench.rankers.base

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(micebench.rankers.base, "load_ranker", interrupted)
    code, _, err = cli(capsys, "precompute", "--model", "colbert", "--dataset", str(folder), "-o", str(out))
    assert code == 130
    assert (
        err == f"interrupted; to continue: micebench precompute --model colbert --dataset {folder} -o {out} --resume\n"
    )

    import micebench.report.collect

    monkeypatch.setattr(micebench.report.collect, "collect_groups", lambda *a, **k: interrupted(None, None))
    code, _, err = cli(capsys, "report", "--results", str(tmp_path))
    assert code == 130 and err == "interrupted\n"


def test_error_text_is_printed_verbatim_not_as_markup(capsys, tmp_path):
    experiment = tmp_path / "experiment.toml"
    experiment.write_text('output = "out"\n[[rankers]]\nmodel = "bm25"\n')
    code, _, err = cli(capsys, "run", "--config", str(experiment))
    assert code == 2
    assert err == f"error: {experiment}: needs a [datasets] table with in_domain and/or out_of_domain lists\n"


def test_an_experiment_naming_an_unknown_model_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    experiment = tmp_path / "experiment.toml"
    experiment.write_text(
        f'output = "{out}"\n[datasets]\nin_domain = ["{_collection(tmp_path / "small")}"]\n'
        '[[rankers]]\nmodel = "bm25"\n[[rankers]]\nmodel = "no-such-model"\n'
    )
    code, _, err = cli(capsys, "run", "--config", str(experiment))
    assert code == 2
    assert err.startswith(f"error: {experiment}: rankers[1]: unknown model 'no-such-model' (available: ")
    assert len(err.splitlines()) == 1
    assert not (out / "experiment.json").exists() and not out.exists()


def test_a_damaged_mice_or_sentence_transformers_config_is_named(
    tmp_path, tiny_bert_ce, tiny_bert_encoder, capsys, data_dir
):
    """Broken JSON in a MICE checkpoint or a bi-encoder's (or ColBERT's) modules.json: one line naming the file."""
    from micebench.errors import MicebenchError
    from micebench.models.mice_io import save_mice
    from micebench.rankers.base import load_ranker

    mice = load_ranker("mice-l1+1", checkpoint=tiny_bert_ce, device="cpu", untrained=True)
    folder = tmp_path / "mice"
    save_mice(mice.model, mice.tokenizer, folder)
    (folder / "config.json").write_text('{"mice": {"merge_layer": 1,')
    adi = str(data_dir / "adi")
    code, _, err = cli(capsys, "precompute", "--model", "mice", "--checkpoint", str(folder), "--dataset", adi)
    assert code == 2 and f"damaged file {folder / 'config.json'} (not valid JSON" in err
    assert len(err.strip().splitlines()) == 1
    dense = tmp_path / "dense"
    shutil.copytree(tiny_bert_encoder, dense)
    (dense / "modules.json").write_text("[{")
    with pytest.raises(MicebenchError, match="damaged file .*modules.json"):
        load_ranker("dense", checkpoint=str(dense), device="cpu")
    with pytest.raises(MicebenchError, match="damaged file .*modules.json"):  # PyLate layout
        load_ranker("colbert", checkpoint=str(dense), device="cpu")


def test_a_full_disk_in_precompute_is_a_machine_fault(capsys, tmp_path, monkeypatch, tiny_bert_encoder):
    """The store writer wraps its own writes: a full disk exits 1 (a fault of the machine), as in `run`."""
    import safetensors.torch

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    store = tmp_path / "store"
    code, _, err = cli(
        capsys, "precompute", "--model", "colbert", "--checkpoint", tiny_bert_encoder, "--dataset",
        str(_collection(tmp_path / "small")), "--device", "cpu", "-o", str(store),
    )  # fmt: skip
    assert code == 1, err
    assert err.startswith(f"error: cannot write {store}: No space left on device")
