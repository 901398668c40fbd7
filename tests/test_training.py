"""Training: losses by hand, learning on a fixed batch, kill-and-resume equality, checkpoints, bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from micebench import load_ranker
from micebench.errors import MicebenchError
from micebench.training.data import TrainingSet, mine_bm25_triples, read_teacher_scores
from micebench.training.loop import TrainConfig, Trainer
from micebench.training.losses import bce, listwise, margin_mse
from micebench.training.run import load_student
from tests.conftest import write_beir
from tests.test_cli import cli

WORDS = ["goldfish", "tank", "water", "wifi", "radio", "protocol", "aquarium", "router", "fish", "signal"]


def test_losses_equal_hand_computed_values():
    sp, sn = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    tp, tn = torch.tensor([3.0, 1.0]), torch.tensor([0.0, 0.0])
    assert margin_mse(sp, sn, tp, tn).item() == pytest.approx(((1.0 - 3.0) ** 2 + (-1.0 - 1.0) ** 2) / 2)
    expected = (
        math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0)) + math.log1p(math.exp(1.5))
    ) / 4
    assert bce(sp, sn).item() == pytest.approx(expected, rel=1e-6)
    lw = listwise(sp, torch.tensor([[1.0, 0.0], [1.5, 2.5]]))
    hand = (
        -(2.0 - math.log(math.exp(2) + math.exp(1) + 1))
        - (0.5 - math.log(math.exp(0.5) + math.exp(1.5) + math.exp(2.5)))
    ) / 2
    assert lw.item() == pytest.approx(hand, rel=1e-6)


@pytest.fixture()
def collection(tmp_path):
    rng = np.random.default_rng(0)
    corpus = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS, 8))} for i in range(40)]
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choice(WORDS, 2))} for i in range(6)]
    folder = write_beir(tmp_path / "c", corpus, queries, [(f"q{i}", f"d{i}", 1) for i in range(6)], split="train")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i + 6}\t1\n" for i in range(6))
    )
    return folder


def _config(tmp_path, checkpoint, collection, **kw) -> TrainConfig:
    base = dict(
        model="ce",
        init=checkpoint,
        train=str(collection),
        loss="bce",
        steps=6,
        batch_size=4,
        lr=1e-3,
        warmup=1,
        seed=3,
        every=2,
        output=str(tmp_path / "run"),
        device="cpu",
        max_length=32,
        negatives_per_query=3,
    )
    return TrainConfig(**{**base, **kw})


def _training(collection, split="train"):
    from micebench.data import load_dataset

    return mine_bm25_triples(load_dataset(str(collection), split=split), depth=10, negatives=3, seed=0)


def test_bm25_mining_excludes_positives(collection):
    training = _training(collection)
    assert training.triples and all(t.pos == f"d{t.qid[1:]}" and t.neg != t.pos for t in training.triples)


def test_a_few_steps_lower_the_loss(tmp_path, tiny_bert_ce, collection):
    torch.manual_seed(0)
    config = _config(tmp_path, tiny_bert_ce, collection, steps=15)
    student = load_student(config)
    trainer = Trainer(config, student, _training(collection))
    fixed = trainer.training.triples[:8]
    with torch.no_grad():
        student.trainable_module().eval()
        before = trainer.loss_on(fixed).item()
    trainer.run()
    with torch.no_grad():
        student.trainable_module().eval()
        after = trainer.loss_on(fixed).item()
    assert after < before


@pytest.mark.parametrize("model", ["ce", "mice-l1+1", "ce-grouped"])
def test_kill_and_resume_gives_the_same_weights(tmp_path, tiny_bert_ce, collection, model):
    training = _training(collection)
    extra = {"model": model}
    if model == "ce-grouped":  # listwise over 1 positive + 3 negatives drawn per step
        extra = {"model": "ce", "loss": "listwise", "group_size": 4, "batch_size": 2}
    torch.manual_seed(0)
    straight = Trainer(
        _config(tmp_path / "a", tiny_bert_ce, collection, **extra),
        load_student(_config(tmp_path / "a", tiny_bert_ce, collection, **extra)),
        training,
    )
    straight.run()
    torch.manual_seed(0)
    config = _config(tmp_path / "b", tiny_bert_ce, collection, **extra)
    first = Trainer(config, load_student(config), training)
    first.run(stop_after=3)  # the process dies after the step-3 checkpoint
    torch.manual_seed(123)  # a new process: fresh RNG, fresh model
    second = Trainer(config, load_student(config), training)
    second.run(resume=True)
    for (name, a), (_, b) in zip(straight.module.state_dict().items(), second.module.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert second.step == 6 and len(second.history) == 6


def test_grouped_listwise_is_the_softmax_over_the_positive_and_its_query_negatives(tmp_path, tiny_bert_ce, collection):
    training = _training(collection)
    config = _config(tmp_path, tiny_bert_ce, collection, loss="listwise", group_size=3, batch_size=2)
    trainer = Trainer(config, load_student(config), training)
    seen = []
    original = trainer.student.score_pairs

    def spy(queries, docs):
        seen.append((list(queries), list(docs)))
        return original(queries, docs)

    trainer.student.score_pairs = spy
    triple = training.triples[0]
    loss = trainer.loss_on([triple]).item()
    ((queries, docs),) = seen
    assert queries == [training.queries[triple.qid]] * 3 and docs[0] == training.docs[triple.pos]
    negatives = {training.docs[n] for n in trainer.negatives[triple.qid]}
    assert docs[1] == training.docs[triple.neg] and docs[2] in negatives and docs[2] != docs[1]
    with torch.no_grad():
        s = original(queries, docs).tolist()
    assert loss == pytest.approx(-(s[0] - math.log(sum(math.exp(x) for x in s))), rel=1e-5)
    with pytest.raises(MicebenchError, match="--group-size above 2 needs --loss listwise"):
        Trainer(_config(tmp_path, tiny_bert_ce, collection, group_size=3), trainer.student, training)


def test_micro_batches_do_not_change_a_grouped_step(tmp_path, tiny_bert_ce, collection):
    """Gradient accumulation splits a step's triples, not its draws: the same (query, document) groups are scored."""
    training = _training(collection)
    scored = []
    for accumulation in (1, 2, 3):
        config = _config(
            tmp_path / str(accumulation),
            tiny_bert_ce,
            collection,
            loss="listwise",
            group_size=3,  # one extra negative out of a query's other two: the draw matters
            batch_size=6,
            grad_accumulation=accumulation,
        )
        trainer = Trainer(config, load_student(config), training)
        seen = []
        original = trainer.student.score_pairs

        def spy(queries, docs, seen=seen, original=original):
            seen.extend(zip(queries, docs, strict=True))
            return original(queries, docs)

        trainer.student.score_pairs = spy
        for _ in range(3):
            trainer.train_step()
        scored.append(seen)
    assert scored[1] == scored[0] and scored[2] == scored[0]


def test_resuming_several_seeds_keeps_the_finished_and_begins_the_rest(tmp_path, tiny_bert_ce, collection):
    """`train --seeds 2 --resume` after seed 3 finished and before seed 4 began: seed 3 is kept, seed 4 trains
    (it used to stop with "nothing to resume"), and both equal an uninterrupted two-seed run."""
    import shutil

    from micebench.training.run import train_models

    straight = train_models(_config(tmp_path / "a", tiny_bert_ce, collection), seeds=2)
    config = _config(tmp_path / "b", tiny_bert_ce, collection)
    first, second = train_models(config, seeds=2)
    shutil.rmtree(second.parent)  # interrupted before seed 4 began
    resumed = train_models(config, seeds=2, resume=True)
    assert resumed == [first, second] and second.is_dir()
    for a, b in zip(straight, resumed, strict=True):
        x, y = load_ranker("ce", checkpoint=str(a), device="cpu"), load_ranker("ce", checkpoint=str(b), device="cpu")
        docs = ["goldfish tank water", "wifi radio"]
        np.testing.assert_array_equal(x.score("goldfish", docs), y.score("goldfish", docs))


def test_resume_refuses_another_configuration(tmp_path, tiny_bert_ce, collection):
    training = _training(collection)
    config = _config(tmp_path, tiny_bert_ce, collection)
    Trainer(config, load_student(config), training).run(stop_after=2)
    other = _config(tmp_path, tiny_bert_ce, collection, lr=5e-4)
    with pytest.raises(MicebenchError, match="another configuration"):
        Trainer(other, load_student(other), training).run(resume=True)


def test_saved_checkpoint_reloads_with_identical_scores(tmp_path, tiny_bert_ce, collection):
    config = _config(tmp_path, tiny_bert_ce, collection, model="mice-l1+1", validate=None)
    student = load_student(config)
    best = Trainer(config, student, _training(collection)).run()
    student.trainable_module().eval()
    docs = ["goldfish tank water", "wifi radio"]
    reloaded = load_ranker("mice", checkpoint=str(best), device="cpu")
    assert reloaded.mice.trained
    np.testing.assert_allclose(reloaded.score("goldfish", docs), student.score("goldfish", docs), atol=1e-6)
    meta = json.loads((best / "micebench_training.json").read_text())
    assert meta["step"] == 6 and (tmp_path / "run" / "curves.csv").is_file()


def test_distillation_with_a_teacher_and_validation(tmp_path, tiny_bert_ce, collection, capsys):
    code, out, err = cli(
        capsys,
        "train",
        "--model",
        "mice-l1+1",
        "--init",
        tiny_bert_ce,
        "--train",
        str(collection),
        "--teacher",
        f"ce:{tiny_bert_ce}",
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--warmup",
        "1",
        "--validate",
        str(collection),
        "--validate-top-k",
        "5",
        "--every",
        "2",
        "--max-length",
        "32",
        "--negatives",
        "3",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "mice"),
    )
    assert code == 0, err
    lines = (tmp_path / "mice" / "teacher_scores.tsv").read_text().splitlines()
    assert lines and len(lines[0].split("\t")) == 5
    curves = (tmp_path / "mice" / "curves.csv").read_text()
    assert "validation" in curves.splitlines()[0]
    assert (tmp_path / "mice" / "best" / "config.json").is_file() and (tmp_path / "mice" / "curves.png").is_file()


def _lucene_bm25(query: list[str], doc: list[str], corpus: list[list[str]], k1: float = 0.9, b: float = 0.4) -> float:
    """Lucene's BM25 by hand: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b dl / avgdl))."""
    avgdl = sum(map(len, corpus)) / len(corpus)
    total = 0.0
    for term in set(query):
        df = sum(term in d for d in corpus)
        tf = doc.count(term)
        if df and tf:
            idf = math.log(1 + (len(corpus) - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return total


def test_bm25_scores_given_documents_with_corpus_statistics(collection):
    from micebench.data import load_dataset
    from micebench.firststage.bm25 import bm25_index_for

    dataset = load_dataset(str(collection), split="train")
    texts = dataset.doc_texts({f"d{i}" for i in range(40)})
    corpus = [texts[f"d{i}"].split() for i in range(40)]  # these words are neither stemmed nor stopwords
    docnos = ["d3", "d0", "d17"]
    got = bm25_index_for(dataset).score_documents("goldfish radio", docnos)
    hand = [_lucene_bm25(["goldfish", "radio"], corpus[int(d[1:])], corpus) for d in docnos]
    np.testing.assert_allclose(got, hand, rtol=1e-5)
    with pytest.raises(MicebenchError, match="not in the BM25 index"):
        bm25_index_for(dataset).score_documents("goldfish", ["d3", "nope"])


def test_an_ensemble_teacher_sums_per_query_z_scores(tiny_bert_ce, collection):
    from micebench.data import load_dataset
    from micebench.training.run import score_with_teacher

    dataset = load_dataset(str(collection), split="train")
    training = mine_bm25_triples(dataset, depth=10, negatives=3)
    scored = score_with_teacher(training, f"bm25, ce:{tiny_bert_ce}", "cpu", 32, dataset)
    ce = load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu", max_length=32)
    texts = dataset.doc_texts({f"d{i}" for i in range(40)})
    corpus = [texts[f"d{i}"].split() for i in range(40)]
    qid = training.triples[0].qid
    docnos = sorted({d for t in training.triples if t.qid == qid for d in (t.pos, t.neg)})
    query = training.queries[qid]
    lexical = np.array([_lucene_bm25(query.split(), corpus[int(d[1:])], corpus) for d in docnos])
    neural = np.asarray(ce.score(query, [texts[d] for d in docnos]), dtype=np.float64)
    fused = (lexical - lexical.mean()) / lexical.std() + (neural - neural.mean()) / neural.std()
    expected = dict(zip(docnos, fused, strict=True))
    for t in (t for t in scored.triples if t.qid == qid):
        assert t.teacher_pos == pytest.approx(expected[t.pos], abs=1e-4)
        assert t.teacher_neg == pytest.approx(expected[t.neg], abs=1e-4)
    with pytest.raises(MicebenchError, match="empty teacher name"):
        score_with_teacher(training, "bm25,", "cpu", 32, dataset)


def test_cached_teacher_scores_are_reused_only_for_the_same_teacher(tmp_path, tiny_bert_ce, collection, monkeypatch):
    from micebench.training import run as training_run

    calls = []
    real = training_run.score_with_teacher
    monkeypatch.setattr(training_run, "score_with_teacher", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    config = _config(tmp_path, tiny_bert_ce, collection, loss="margin-mse", teacher="bm25")
    first = training_run.build_training_set(config, None, "train")
    again = training_run.build_training_set(config, None, "train")
    assert calls == ["bm25"] and [t.teacher_pos for t in again.triples] == pytest.approx(
        [t.teacher_pos for t in first.triples], abs=1e-6
    )
    training_run.build_training_set(
        _config(tmp_path, tiny_bert_ce, collection, loss="margin-mse", teacher=f"ce:{tiny_bert_ce}"), None, "train"
    )
    training_run.build_training_set(replace(config, max_length=16), None, "train")
    assert calls == ["bm25", f"ce:{tiny_bert_ce}", "bm25"]


def test_bad_training_input(tmp_path, tiny_bert_ce, collection, capsys):
    from micebench.data import load_dataset

    dataset = load_dataset(str(collection), split="train")
    bad = tmp_path / "scores.tsv"
    bad.write_text("1.0\t0.5\tq1\td1\n")
    with pytest.raises(MicebenchError, match="scores.tsv:1: malformed teacher-score line"):
        read_teacher_scores(bad, dataset)
    bad.write_text("1.0\t0.5\tq1\td1\tnope\n")
    with pytest.raises(MicebenchError, match="1 document ids absent"):
        read_teacher_scores(bad, dataset)
    bad.write_text("1.0\t0.5\tq99\td1\td2\n")
    with pytest.raises(MicebenchError, match="query ids absent"):
        read_teacher_scores(bad, dataset)
    with pytest.raises(MicebenchError, match="is empty"):
        TrainingSet([], {}, {}, "nothing")
    base = [
        "train",
        "--init",
        tiny_bert_ce,
        "--train",
        str(collection),
        "--steps",
        "2",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "x"),
    ]
    code, _, err = cli(capsys, *base, "--model", "mice-l5+1", "--loss", "bce")
    assert code == 2 and "does not fit a mice-l5+1 student" in err
    code, _, err = cli(capsys, *base, "--model", "ce")
    assert code == 2 and "margin-mse needs --teacher" in err
    empty = write_beir(tmp_path / "empty", [{"_id": "d", "text": "x"}], [{"_id": "q", "text": "y"}], [("z", "d", 1)])
    code, _, err = cli(capsys, *base, "--model", "ce", "--loss", "bce", "--validate", str(empty))
    assert code == 2 and "no judged queries" in err
    assert not (tmp_path / "x" / "last").exists()


def test_a_student_must_take_every_option_given(tmp_path, tiny_bert_encoder, collection):
    """ColBERT reads its own query and document lengths: --max-length is refused, naming the option and model."""
    with pytest.raises(MicebenchError, match="option --max-length does not apply to model 'colbert'"):
        load_student(_config(tmp_path, tiny_bert_encoder, collection, model="colbert"))
    with pytest.raises(MicebenchError, match="model 'bm25' cannot be trained"):
        load_student(_config(tmp_path, tiny_bert_encoder, collection, model="bm25"))


@pytest.mark.parametrize(
    ("model", "extra", "backbone"),
    [
        ("masked-ce", {"schedule": "mask2"}, "bert"),
        ("colbert", {"max_length": None}, "bert"),
        ("ce", {}, "modernbert"),
        ("masked-ce", {"schedule": "mask2"}, "modernbert"),
        ("mice-l2+2", {}, "modernbert"),
        ("colbert", {"max_length": None}, "modernbert"),
    ],
)
def test_other_students_train_and_reload(tmp_path, request, collection, model, extra, backbone):
    names = {"bert": ("tiny_bert_ce", "tiny_bert_encoder"), "modernbert": ("tiny_modernbert_ce", "tiny_modernbert_ce")}
    init = request.getfixturevalue(names[backbone][1 if model == "colbert" else 0])
    config = _config(tmp_path, init, collection, model=model, steps=3, **extra)
    student = load_student(config)
    best = Trainer(config, student, _training(collection)).run()
    student.trainable_module().eval()
    options = {"schedule": "mask2"} if model == "masked-ce" else {}
    reloaded = load_ranker(model, checkpoint=str(best), device="cpu", **options)
    docs = ["goldfish tank water", "wifi radio"]
    np.testing.assert_allclose(reloaded.score("goldfish", docs), student.score("goldfish", docs), atol=1e-5)


def test_fingerprints_of_older_runs_still_match():
    """Hashes of the code before `train --dtype` existed: a run started then still resumes."""
    assert TrainConfig(model="ce", init="minilm-l6", train="scifact").fingerprint() == "f261177f896f82c0"
    new_recipe = TrainConfig(
        model="mice-l2+2", init="minilm-l6", train="scifact", holdout=50, teacher_norm="margin-rms"
    )
    assert new_recipe.fingerprint() == "7bb3e224d359a4d3"
    assert replace(new_recipe, dtype="bf16").fingerprint() != new_recipe.fingerprint()


def test_bf16_training_on_cpu_autocasts_the_forward_and_records_it(tmp_path, tiny_bert_ce, collection):
    """`--dtype bf16` runs the forward under bf16 autocast (scores move by bf16 rounding: 8 significant bits,
    about 1% of a score after a few layers, and no more) while the weights stay fp32; the checkpoint and its card
    say how it was trained."""
    training = _training(collection)
    fp32 = _config(tmp_path / "a", tiny_bert_ce, collection)
    bf16 = _config(tmp_path / "b", tiny_bert_ce, collection, dtype="bf16")
    student = load_student(fp32)
    student.trainable_module().eval()
    triples = training.triples[:8]
    queries, docs = [training.queries[t.qid] for t in triples], [training.docs[t.pos] for t in triples]
    with torch.no_grad():
        exact = Trainer(fp32, student, training)._scores(queries, docs)
        rounded = Trainer(bf16, student, training)._scores(queries, docs)
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
    torch.testing.assert_close(rounded, exact, rtol=0.05, atol=0)
    trainer = Trainer(bf16, load_student(bf16), training)
    trainer.run()
    assert all(p.dtype == torch.float32 for p in trainer.module.parameters())
    meta = json.loads((tmp_path / "b" / "run" / "best" / "micebench_training.json").read_text())
    assert meta["compute"] == "bf16 autocast" and meta["config"]["dtype"] == "bf16"
    assert "| compute | bf16 autocast |" in (tmp_path / "b" / "run" / "best" / "README.md").read_text()
    assert Trainer(fp32, student, training).compute == "fp32"  # auto is fp32 off CUDA, as before


def test_an_unknown_training_dtype_is_one_line(tmp_path, tiny_bert_ce, collection, capsys):
    code, _, err = cli(
        capsys, "train", "--model", "ce", "--init", tiny_bert_ce, "--train", str(collection), "--loss", "bce",
        "--steps", "2", "--device", "cpu", "--dtype", "fp16", "-o", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 2 and "unknown --dtype 'fp16' for training (use auto, fp32, bf16)" in err
    assert not (tmp_path / "x").exists()
