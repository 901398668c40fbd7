"""The MICE paper's comparison (Table 1, efficiency table, Pareto figures) in two sizes from one script.

Every family is trained by one recipe from the same initial weights, evaluated in-domain and out-of-domain by
re-ranking the BM25 top-k, timed, and reported by `micebench report`. Every number comes from a `micebench`
command; this script only sequences them, skips a finished step and continues an interrupted one (so a rerun
resumes), and records the wall time of each step in `<results>/step-times.tsv`.

    python benchmarks/paper_mini.py                      # offline miniature: 2 CPU cores, the local mirror
    python benchmarks/paper_mini.py --families all       # + mask1, mask3-l2, prettr-l2, mice-l2+4
    python benchmarks/paper_mini.py --seeds 3            # + every student on seeds 13 and 14, every set (mini)
    python benchmarks/paper_mini.py --teacher-gap        # + MICE recipe variants (in-domain only; mini)
    python benchmarks/paper_mini.py --full --dry-run     # the paper's recipe, options and data names checked only

Miniature (offline): the teacher is trained by the recipe of `make train-demo`'s first step (all-MiniLM-L6-v2 on
SciFact train by Margin-MSE from BM25 + the zero-shot dense model, 600 steps); every student starts from
all-MiniLM-L6-v2 and is distilled from that teacher by Margin-MSE on the same triples (one teacher-score file), with
the same steps, batch, learning-rate schedule and seed. In-domain: SciFact test; out-of-domain: every other judged
collection of the mirror. `--full`: MiniLM-L12, MS MARCO train with the BERT-cat ensemble teacher-score file, l4+3
and l4+8, the paper's optimiser settings, 5 seeds, BM25 top-1000 over MS MARCO dev, TREC DL 2019/2020 and the 13
BEIR sets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # full_plan and full_smoke, the --full plan's costs and fixtures


class PlanError(Exception):
    """A plan that cannot be built from the options given (bad input: one line, exit 2)."""


@dataclass(frozen=True)
class Family:
    """One student family: the `train --model` name, extra train flags and how `run` evaluates it."""

    name: str
    train_model: str
    train_flags: tuple[str, ...] = ()
    run_model: str = ""
    store_model: str = ""  # `precompute --model` for families scored from a store ("" = from the texts)
    store_mode: str = ""


def families(size: str, chosen: str) -> list[Family]:
    """The students of one size; `chosen` is "default", "all" or a comma list of family names."""
    k = 2 if size == "mini" else 4
    tops = (2, 4) if size == "mini" else (3, 8)  # mini: l2+2 (layers dropped) and l2+4 (none dropped of 6)
    every = [
        Family("ce", "ce", run_model="ce"),
        Family("mask1", "masked-ce", ("--schedule", "mask1"), run_model="mask1"),
        Family("mask2", "masked-ce", ("--schedule", "mask2"), run_model="mask2"),
        Family(f"mask3-l{k}", "masked-ce", ("--schedule", f"mask3-l{k}"), run_model=f"mask3-l{k}"),
        Family(f"prettr-l{k}", "masked-ce", ("--schedule", f"prettr-l{k}"), run_model=f"prettr-l{k}"),
        Family(
            f"mice-l{k}+{tops[0]}", f"mice-l{k}+{tops[0]}", run_model="mice", store_model="mice", store_mode="states"
        ),
        Family(
            f"mice-l{k}+{tops[1]}", f"mice-l{k}+{tops[1]}", run_model="mice", store_model="mice", store_mode="states"
        ),
        Family("colbert", "colbert", run_model="colbert", store_model="colbert", store_mode="embeddings"),
    ]
    by_name = {f.name: f for f in every}
    if chosen == "all":
        return every
    if chosen == "default":
        names = ["ce", "mask2", f"mice-l{k}+{tops[0]}", "colbert"]
        if size == "full":
            names = [
                "ce",
                "mask1",
                "mask2",
                f"mask3-l{k}",
                f"mice-l{k}+{tops[0]}",
                f"mice-l{k}+{tops[1]}",
                "colbert",
                f"prettr-l{k}",
            ]
    else:
        names = [n.strip() for n in chosen.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise PlanError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown} (choose from {list(by_name)})")
    return [by_name[n] for n in names]


@dataclass(frozen=True)
class Recipe:
    """Everything that differs between the two sizes."""

    base: str
    train: str
    split: str | None
    steps: int
    batch: int
    lr: str
    warmup: int
    max_length: int
    negatives: int
    seeds: int
    top_k: int
    in_domain: list[str]
    out_of_domain: list[str]
    teacher_scores: str | None = None  # a published teacher-score file (--full) instead of a trained teacher
    validate: str | None = None
    every: int = 200
    extra_seeds: int = 0
    holdout: int = 0  # training queries held out to validate on (the convergence rule; mini)
    patience: int = 0  # stop after this many validations without improvement (0: train to `steps`)
    teacher_norm: str = "none"  # train --teacher-norm (the score-scale fix)
    arch: str = ""  # `latency --arch` (default: the base model's preset)
    latency_batch: int = 64
    efficiency_queries: int = 0  # > 0: stores and store-read runs only for this many in-domain queries (--full)


def beir_sets() -> list[str]:
    """The paper's 13 BEIR sets, as micebench's registry names them (its out-of-domain group)."""
    from micebench.data.registry import SHORT_NAMES

    return [name for name, short in SHORT_NAMES.items() if short.group == "beir"]


def recipe(size: str, teacher_file: str) -> Recipe:
    if size == "full":
        return Recipe(
            base="microsoft/MiniLM-L12-H384-uncased",
            train="msmarco-passage/train",
            split=None,
            steps=125_000,
            batch=32,
            lr="7e-6",
            warmup=5000,
            max_length=512,
            negatives=20,
            seeds=5,
            top_k=1000,
            in_domain=["msmarco-dev", "trec-dl-19", "trec-dl-20"],
            out_of_domain=beir_sets(),
            teacher_scores=teacher_file,
            validate="beir/nfcorpus/dev",
            every=5000,
            arch="minilm-l12",
            efficiency_queries=100,
        )
    return Recipe(
        base="minilm-l6",
        train="scifact",
        split="train",
        steps=1000,
        batch=8,
        lr="1e-4",
        warmup=50,
        max_length=256,
        negatives=20,
        seeds=1,
        top_k=100,
        # the convergence rule: validate every 100 steps on 50 held-out SciFact train queries, stop after 3
        # validations without improvement, at most 1,000 steps (the cap); teacher margins scaled to unit RMS
        holdout=50,
        every=100,
        patience=3,
        teacher_norm="margin-rms",
        in_domain=["scifact"],
        out_of_domain=["trec-dl-19", "trec-dl-20", "noveleval-2306", "cisi", "cacm", "medline-classic", "npl", "adi"],
    )


def smoke_scale(base: str) -> dict[str, object]:
    """`--full --smoke`: the --full recipe's numbers scaled to the fixtures (benchmarks/full_smoke.py); every
    command, dataset name and option stays the plan's own."""
    return {
        "base": base,
        "steps": 2,
        "batch": 4,
        "warmup": 1,
        "every": 2,
        "max_length": 64,
        "arch": base,
        "latency_batch": 8,
        "efficiency_queries": 3,
    }


@dataclass
class Step:
    """One micebench command, skipped when finished: `done` exists (a result, a checkpoint or a store) and, for a
    training, its curves record the last of `steps` (a validated training writes best/ before it ends)."""

    name: str
    argv: list[str]
    done: Path | None = None
    resume_flag: Path | None = None  # when this exists and the step is not finished, add --resume
    steps: int | None = None
    resume_under: Path | None = None  # `run --config`: add --resume when an interrupted run's .partial is here
    micebench: bool = True  # a micebench command (else a helper of this script)
    cost: Any = None  # full_plan.Cost: estimated disk and GPU-hours (the --full plan)

    def finished(self) -> bool:
        if self.done is None or not self.done.exists():
            return False
        if self.steps is None:
            return True
        try:
            with open(self.done, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            # a training stopped by the convergence rule says so in its last row's `stop` column
            return bool(rows) and (int(float(rows[-1]["step"])) >= self.steps or bool(rows[-1].get("stop")))
        except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as err:
            print(f"paper_mini: {self.done} is unreadable ({type(err).__name__}); the step counts as unfinished")
            return False

    def command(self) -> list[str]:
        resume = self.resume_flag is not None and self.resume_flag.exists()
        resume |= self.resume_under is not None and any(self.resume_under.rglob(".*.partial"))
        return [*self.argv, "--resume"] if resume else list(self.argv)


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    configs: dict[Path, str] = field(default_factory=dict)  # experiment files written before the steps run
    links: dict[Path, Path] = field(default_factory=dict)  # symlinks made before the steps run (link -> target)
    caches: Any = None  # full_plan.Cost of the data caches (ir_datasets, BM25 indexes) the steps fill
    check_report: list[str] = field(default_factory=list)  # --full: rows the report must show
    same_scores: list[tuple[Path, Path]] = field(default_factory=list)  # (from a store, from the texts) results

    def add(self, name: str, argv: list[str], done: Path | None = None, resume_flag: Path | None = None) -> Step:
        self.steps.append(Step(name, argv, done, resume_flag))
        return self.steps[-1]

    def train(self, name: str, argv: list[str], output: Path, steps: int, seeds: list[int] | None = None) -> Step:
        """A training: finished when the last seed's curves reach `steps`; resumed once the first seed has a
        saved state (then a finished seed is kept, an interrupted one continues, one not begun starts)."""
        first, last = (output, output) if not seeds else (output / f"seed-{seeds[0]}", output / f"seed-{seeds[-1]}")
        self.steps.append(Step(name, argv, last / "curves.csv", first / "last", steps))
        return self.steps[-1]

    def evaluate(self, name: str, argv: list[str], results: Path) -> Step:
        """`run --config`: micebench keeps the finished results itself; an interrupted run continues."""
        self.steps.append(Step(name, argv, resume_under=results))
        return self.steps[-1]


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def experiment_toml(
    output: Path,
    r: Recipe,
    rankers: list[dict[str, object]],
    in_domain: list[str],
    out_of_domain: list[str],
    seeds: list[int],
    first_stage: str = "auto",
    device: dict[str, str] | None = None,
) -> str:
    """An experiment file for `micebench run --config` (datasets grouped in/out of domain, one entry per ranker);
    `device` ({"device": ..., "dtype": ...}) applies to every ranker that takes it."""
    lines = [
        "# Written by benchmarks/paper_mini.py: the comparison's evaluation (micebench run --config FILE).",
        f'output = "{output}"',
        f'first_stage = "{first_stage}"',
        f"top_k = {r.top_k}",
        f"seeds = {seeds}",
        *(f'{key} = "{value}"' for key, value in (device or {}).items()),
        "",
        "[datasets]",
        f"in_domain = {toml_list(in_domain)}",
        f"out_of_domain = {toml_list(out_of_domain)}",
    ]
    for ranker in rankers:
        lines += ["", "[[rankers]]"]
        for key, value in ranker.items():
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def build_plan(args: argparse.Namespace) -> Plan:
    size = "full" if args.full else "mini"
    r = recipe(size, args.teacher_file)
    if args.full and getattr(args, "smoke_base", None):  # --smoke: the same plan, scaled down to the fixtures
        r = replace(r, **smoke_scale(args.smoke_base))
    mb = [args.micebench]
    ck, res = Path(args.checkpoints), Path(args.results)
    train_dtype = [] if args.train_dtype == "auto" else ["--dtype", args.train_dtype]  # every training alike
    plan = Plan()
    common = [
        "--loss",
        "margin-mse",
        "--steps",
        str(r.steps),
        "--batch-size",
        str(r.batch),
        "--lr",
        r.lr,
        "--warmup",
        str(r.warmup),
        "--negatives",
        str(r.negatives),
        "--every",
        str(r.every),
        "--device",
        args.device,
        *train_dtype,
    ]
    data = ["--train", r.train] + (["--split", r.split] if r.split else [])
    if r.validate:
        common += ["--validate", r.validate]
    if r.holdout:
        common += ["--holdout", str(r.holdout)]
    if r.patience:
        common += ["--patience", str(r.patience)]
    if r.teacher_norm != "none":
        common += ["--teacher-norm", r.teacher_norm]

    def student_argv(fam: Family, teacher: list[str], seeds_flags: list[str], output: Path) -> list[str]:
        """`micebench train` of one student by the table's recipe (the table's, --seeds' and every seed alike)."""
        length = [] if fam.train_model == "colbert" else ["--max-length", str(r.max_length)]
        model = ["--model", fam.train_model, *fam.train_flags, "--init", r.base]
        return mb + ["train", *model, *data, *teacher, *common, *length, *seeds_flags, "-o", str(output)]

    def student_entry(fam: Family, name: str, checkpoint: str) -> dict[str, object]:
        """A student's `[[rankers]]` entry in an experiment file (ColBERT keeps its own lengths)."""
        entry: dict[str, object] = {
            "name": name,
            "model": fam.run_model,
            "checkpoint": checkpoint,
            "backbone": "trained",
        }
        if fam.train_model != "colbert":
            entry["max_length"] = r.max_length
        return entry

    from micebench.results import slug

    in_domain = r.in_domain[0]  # the extras are evaluated in domain only
    facts, bb = None, None  # published (or, --smoke, the fixtures') collection sizes: the --full plan's cost estimates
    if size == "full":
        import full_plan

        smoke_root = getattr(args, "smoke_root", None)
        facts = full_plan.fixture_facts(Path(smoke_root)) if smoke_root else full_plan.COLLECTIONS
        bb = full_plan.backbone_of(r.base) if smoke_root else full_plan.MINILM_L12
        plan.caches = (
            full_plan.smoke_caches(Path(smoke_root))
            if smoke_root
            else full_plan.caches(r.in_domain + r.out_of_domain, facts)
        )

    seeds = list(range(12, 12 + r.seeds))
    # 1. the teacher (mini: a cross-encoder trained by the train demo's first step; full: a published score file)
    teacher_ck = ck / "teacher"
    if r.teacher_scores is None:
        teacher_steps = 600  # the train demo's first step
        plan.train(
            f"teacher: train ce from bm25+dense ({teacher_steps} steps)",
            mb
            + [
                "train",
                "--model",
                "ce",
                "--init",
                r.base,
                *data,
                "--teacher",
                "bm25,dense",
                "--loss",
                "margin-mse",
                "--steps",
                str(teacher_steps),
                "--batch-size",
                str(r.batch),
                "--lr",
                "1e-4",
                "--warmup",
                "50",
                "--max-length",
                str(r.max_length),
                "--negatives",
                str(r.negatives),
                "--every",
                "200",
                "--device",
                args.device,
                *train_dtype,
                "--seed",
                "12",
                "-o",
                str(teacher_ck),
            ],
            output=teacher_ck,
            steps=teacher_steps,
        )
    # 2. students: same triples (the first student writes the teacher-score file, the others read it)
    scores_file = r.teacher_scores or str(ck / "students" / "ce" / "teacher_scores.tsv")
    students = families(size, args.families)
    if r.teacher_scores is None and students[0].name != "ce":
        students = sorted(students, key=lambda f: f.name != "ce")
    for i, fam in enumerate(students):
        out = ck / "students" / fam.name
        if r.teacher_scores is None and i == 0:
            teacher = ["--teacher", f"ce:{teacher_ck / 'best'}"]
            if fam.name != "ce":
                raise PlanError(
                    f"the miniature's students learn from the teacher scores the ce student writes: add ce to "
                    f"--families (e.g. --families ce,{','.join(f.name for f in students)})"
                )
        else:
            teacher = ["--teacher-scores", scores_file]
        plan.train(
            f"student {fam.name}: train from {r.base} ({r.steps} steps)",
            student_argv(fam, teacher, ["--seed", "12", "--seeds", str(r.seeds)], out),
            output=out,
            steps=r.steps,
            seeds=seeds if r.seeds > 1 else None,
        )
        if facts is not None:
            plan.steps[-1].cost = full_plan.training(
                fam.name, r.steps, r.batch, r.seeds, r.max_length, r.every, 20, facts, bb
            )
    # 3. candidate-only stores for the families scored from a store (--full: after the evaluation, for the
    # efficiency sample only; effectiveness is scored from the texts, which gives the same scores)
    datasets = r.in_domain + r.out_of_domain

    def add_stores(store_seeds: list[int], store_sets: list[str], first: str) -> None:
        for fam in (f for f in students if f.store_model):
            for seed in store_seeds:
                checkpoint = ck / "students" / fam.name / (f"seed-{seed}" if r.seeds > 1 else "") / "best"
                for dataset in store_sets:
                    store = ck / "stores" / fam.name / (f"seed-{seed}" if r.seeds > 1 else "") / dataset
                    step = plan.add(
                        f"store {fam.name} {dataset}" + (f" seed {seed}" if r.seeds > 1 else ""),
                        mb
                        + [
                            "precompute",
                            "--model",
                            fam.store_model,
                            "--checkpoint",
                            str(checkpoint),
                            "--dataset",
                            dataset,
                            "--first-stage",
                            first,
                            "--top-k",
                            str(r.top_k),
                            "--mode",
                            fam.store_mode,
                            "--dtype",
                            "fp16",
                            "--device",
                            args.device,
                            "-o",
                            str(store),
                        ],
                        done=store / "manifest.json",
                        resume_flag=store.parent / f".{store.name}.partial",  # an interrupted store continues
                    )
                    if facts is not None:
                        step.cost = full_plan.store(
                            fam.name, r.efficiency_queries, r.top_k, dataset, r.max_length, facts, bb
                        )

    if not r.efficiency_queries:
        add_stores(seeds, datasets, "auto")
    # 4. evaluation: one experiment file, every ranker x dataset through `micebench run --config`
    seed_part = "seed-{seed}/" if r.seeds > 1 else ""
    rankers: list[dict[str, object]] = [{"name": "bm25", "model": "bm25", "backbone": "reference"}]
    if r.teacher_scores is None:
        rankers.append(
            {
                "name": "teacher-ce",
                "model": "ce",
                "checkpoint": str(teacher_ck / "best"),
                "max_length": r.max_length,
                "backbone": "reference",
            }
        )
    for fam in students:
        entry = student_entry(fam, fam.name, str(ck / "students" / fam.name) + "/" + seed_part + "best")
        if fam.store_model and not r.efficiency_queries:
            entry["precomputed"] = str(ck / "stores" / fam.name) + "/" + seed_part + "{dataset}"
        rankers.append(entry)  # a store scores as the texts do (checked by the tests and by --full --smoke)
    config = res / f"paper-{size}.toml"
    device = {"device": args.device, "dtype": args.dtype} if size == "full" else None
    plan.configs[config] = experiment_toml(res, r, rankers, r.in_domain, r.out_of_domain, seeds, device=device)
    step = plan.evaluate("evaluate: micebench run --config", mb + ["run", "--config", str(config)], res)
    if facts is not None:
        scored = [("", "none")] + [(f.name, "none") for f in students]
        step.cost = full_plan.evaluation(scored, datasets, r.seeds, r.top_k, r.max_length, facts, bb=bb)
    if r.efficiency_queries:
        # 4b. the efficiency table: the BM25 top-k of a sample of in-domain queries, stores of the first seed's
        # models for those candidates only, and the same models from the store and from the texts over the sample
        sample = res / "efficiency" / f"{in_domain}-sample-{r.efficiency_queries}.trec"
        bm25_runs = res / slug(in_domain) / "bm25"
        step = plan.add(
            f"efficiency sample: BM25 top-{r.top_k} of {r.efficiency_queries} {in_domain} queries",
            [
                sys.executable,
                str(HERE / "full_plan.py"),
                "sample-run",
                str(bm25_runs),
                str(r.efficiency_queries),
                str(sample),
            ],
            done=sample,
        )
        step.micebench = False
        add_stores(seeds[:1], [in_domain], str(sample))
        first = f"seed-{seeds[0]}/" if r.seeds > 1 else ""
        timed_rankers: list[dict[str, object]] = []
        rows: list[tuple[str, str]] = []
        for fam in students:
            if fam.store_model or fam.name == "ce":
                name = fam.name if fam.store_model == "" else f"{fam.name}-texts"
                entry = student_entry(fam, name, str(ck / "students" / fam.name) + "/" + first + "best")
                timed_rankers.append(entry)
                rows.append((fam.name, "none"))
            if fam.store_model:
                store_dir = ck / "stores" / fam.name / first.rstrip("/") / in_domain
                timed_rankers.append({**entry, "name": fam.name, "precomputed": str(store_dir)})
                rows.append((fam.name, "states" if fam.store_model == "mice" else "precomputed"))
        efficiency = res / "efficiency"
        eff_config = res / f"paper-{size}-efficiency.toml"
        plan.configs[eff_config] = experiment_toml(
            efficiency, r, timed_rankers, [in_domain], [], seeds[:1], first_stage=str(sample), device=device
        )
        step = plan.evaluate(
            "efficiency: the sample from the stores and from the texts",
            mb + ["run", "--config", str(eff_config)],
            efficiency,
        )
        if facts is not None:
            step.cost = full_plan.evaluation(
                rows, [in_domain], 1, r.top_k, r.max_length, facts, queries=r.efficiency_queries, bb=bb
            )
        plan.check_report = [f.name for f in students]
        plan.same_scores = [
            (efficiency / slug(in_domain) / slug(f.name), efficiency / slug(in_domain) / slug(f"{f.name}-texts"))
            for f in students
            if f.store_model
        ]
    # 5. efficiency: model-only timing at batch 64 (the report reads <results>/latency/)
    timed = ["ce"]
    for f in students:
        if f.store_model == "mice":
            timed += [f"{f.name}:states", f"{f.name}:none"]
        elif f.store_model == "colbert":
            timed += ["colbert:precomputed", "colbert"]
        elif f.name != "ce":
            timed.append(f.name)
    arch = r.arch or ("minilm-l6" if size == "mini" else "minilm-l12")
    plan.add(
        f"latency: model-only, batch {r.latency_batch}",
        mb
        + [
            "latency",
            "--models",
            ",".join(timed),
            "--arch",
            arch,
            "--batch",
            str(r.latency_batch),
            "--doc-len",
            str(min(r.max_length, 512)),
            "--device",
            args.device,
            *(["--dtype", args.dtype] if size == "full" else []),
            "-o",
            str(res),
            "--name",
            "paper-" + size,
        ],
        done=res / "latency" / f"paper-{size}.json",
    )
    # 6. optional: more seeds of every student (--seeds N) and the teacher-gap variants (mini)
    if args.seeds > 1 and size == "mini":
        seeds_res = res.parent / (res.name + "-seeds")
        more = list(range(13, 12 + args.seeds))
        seed_rankers: list[dict[str, object]] = []
        for fam in students:
            out = ck / "seeds" / fam.name
            # seed 12 is the table's student, and its results on every set are the table's own: linked, so that
            # one path pattern names every seed and nothing is trained or scored twice (a store's rows score as
            # the texts do, within 0.02 points, so the table's store-read results stand for seed 12 read from the texts)
            plan.links[out / "seed-12"] = ck / "students" / fam.name
            for dataset in datasets:
                plan.links[seeds_res / slug(dataset) / slug(fam.name) / "seed-12"] = (
                    res / slug(dataset) / slug(fam.name)
                )
            for seed in more:  # one training per seed: each resumes on its own
                plan.train(
                    f"seed {seed} {fam.name}: train from {r.base} ({r.steps} steps)",
                    student_argv(fam, ["--teacher-scores", scores_file], ["--seed", str(seed)], out / f"seed-{seed}"),
                    output=out / f"seed-{seed}",
                    steps=r.steps,
                )
            entry = student_entry(fam, fam.name, str(out) + "/seed-{seed}/best")
            seed_rankers.append(entry)
        seeds_config = res / "seeds.toml"
        plan.configs[seeds_config] = experiment_toml(
            seeds_res, r, seed_rankers, r.in_domain, r.out_of_domain, [12, *more]
        )
        plan.evaluate(
            f"seeds: every student on seeds 12-{11 + args.seeds}, every set",
            mb + ["run", "--config", str(seeds_config)],
            seeds_res,
        )
    if args.teacher_gap and size == "mini":
        gap_res = res.parent / (res.name + "-teacher-gap")
        mice = next(f for f in families(size, "all") if f.name.startswith("mice"))
        variants = {
            # name: (init, lr, warm-up, steps); the table's recipe is ("base", 1e-4, 50, 400)
            # 400: the 2026-12-06 recipe these variants are measured against (r.steps is now the rule's cap)
            "lr3e-5-warmup100": (r.base, "3e-5", 100, 400),
            "init-teacher": (str(teacher_ck / "best"), r.lr, r.warmup, 400),
            "steps-1000": (r.base, r.lr, r.warmup, 1000),  # more steps, affordable because the teacher is cached
        }
        # the teacher, the CE student and the table's MICE are the table's own in-domain runs, under the table's
        # names: linked into this folder, so `run --config` keeps them, not runs them again (the table reads MICE
        # from its store, which scores as the texts do, within 0.02 points)
        for row in ("teacher-ce", "ce", mice.name):
            plan.links[gap_res / slug(in_domain) / slug(row)] = res / slug(in_domain) / slug(row)
        gap_rankers: list[dict[str, object]] = [
            {"name": "teacher-ce", "model": "ce", "checkpoint": str(teacher_ck / "best"), "max_length": r.max_length},
            {
                "name": "ce",
                "model": "ce",
                "checkpoint": str(ck / "students" / "ce" / "best"),
                "max_length": r.max_length,
            },
            {
                "name": mice.name,
                "model": "mice",
                "checkpoint": str(ck / "students" / mice.name / "best"),
                "max_length": r.max_length,
            },
        ]
        for variant, (init, lr, warmup, steps) in variants.items():
            out = ck / "teacher-gap" / variant
            flags = [
                "--loss",
                "margin-mse",
                "--steps",
                str(steps),
                "--batch-size",
                str(r.batch),
                "--lr",
                lr,
                "--warmup",
                str(warmup),
                "--negatives",
                str(r.negatives),
                "--every",
                str(r.every),
                "--device",
                args.device,
                *train_dtype,
                "--max-length",
                str(r.max_length),
            ]
            plan.train(
                f"teacher gap {mice.name} {variant}",
                mb
                + [
                    "train",
                    "--model",
                    mice.train_model,
                    "--init",
                    init,
                    *data,
                    "--teacher-scores",
                    scores_file,
                    *flags,
                    "--seed",
                    "12",
                    "-o",
                    str(out),
                ],
                output=out,
                steps=steps,
            )
            gap_rankers.append(
                {
                    "name": f"{mice.name}-{variant}",
                    "model": "mice",
                    "checkpoint": str(out / "best"),
                    "max_length": r.max_length,
                }
            )
        gap_config = res / "teacher-gap.toml"
        plan.configs[gap_config] = experiment_toml(gap_res, r, gap_rankers, r.in_domain, [], [0])
        plan.evaluate("teacher gap: evaluate in-domain", mb + ["run", "--config", str(gap_config)], gap_res)
    # 7. the report: tables, Pareto figures and report.html from the results folder
    plan.add("report", mb + ["report", "--results", str(res), "--baseline", "ce"])
    if args.seeds > 1 and size == "mini":
        folder = res.parent / f"{res.name}-seeds"
        plan.add("report seeds", mb + ["report", "--results", str(folder), "--std", "--baseline", "ce"])
    if args.teacher_gap and size == "mini":
        folder = res.parent / f"{res.name}-teacher-gap"
        plan.add("report teacher-gap", mb + ["report", "--results", str(folder), "--std"])
    return plan


def dry_run(plan: Plan) -> int:
    """Parse every command with micebench's own CLI (options and their types) and check every dataset name and
    experiment file without loading any weights or data."""
    import typer

    from micebench.cli import app
    from micebench.data.registry import data_dir, where
    from micebench.errors import MicebenchError
    from micebench.experiments import load_experiment
    from micebench.rankers.base import ranker_options, resolve_ranker

    command = typer.main.get_command(app)
    problems = []
    root = data_dir(None)
    for step in (s for s in plan.steps if s.micebench):
        argv = step.command()[1:]
        sub = command.commands[argv[0]]  # type: ignore[attr-defined]
        try:
            ctx = sub.make_context(argv[0], argv[1:], resilient_parsing=False)
        except Exception as err:  # click's usage errors
            problems.append(f"{step.name}: {err}")
            continue
        params = ctx.params
        try:
            for key in ("dataset", "train_source", "validate"):
                if params.get(key):
                    where(params[key], root)
            if argv[0] == "train":
                resolve_ranker(params["model"])
                options = {k: params[k] for k in ("schedule", "max_length") if params.get(k) is not None}
                ranker_options(params["model"], checkpoint=params["init"], **options)
            elif argv[0] == "precompute":
                resolve_ranker(params["model"])
            elif argv[0] == "latency":
                from micebench.latency.runner import parse_model

                for spec in params["models"].split(","):
                    parse_model(spec, params["precompute"])
        except MicebenchError as err:
            problems.append(f"{step.name}: {err}")
    for path, text in plan.configs.items():
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / path.name
            file.write_text(text)
            try:
                data = load_experiment(file)
                for name in [*data["datasets"].get("in_domain", []), *data["datasets"].get("out_of_domain", [])]:
                    where(name, root)
            except MicebenchError as err:
                problems.append(f"{path.name}: {err}")
    for step in plan.steps:
        print("$ " + shlex.join(step.command()))
    print_costs(plan)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"dry run: {len(plan.steps)} commands, {len(plan.configs)} experiment files, {len(problems)} problems")
    return 1 if problems else 0


def plan_disk(plan: Plan) -> float:
    """Bytes the unfinished steps will write (and the data caches, unless a step has finished already)."""
    steps = [s for s in plan.steps if s.cost is not None]
    need = sum(s.cost.disk for s in steps if not s.finished())
    fresh = not any(s.finished() for s in steps)
    return need + (plan.caches.disk if plan.caches is not None and fresh else 0.0)


def print_costs(plan: Plan) -> None:
    """Per step and in total: estimated disk and GPU-hours (benchmarks/full_plan.py states every unit cost)."""
    if plan.caches is None:
        return
    import full_plan

    rows = [(s.name, s.cost) for s in plan.steps if s.cost is not None]
    rows.append(("data caches: ir_datasets downloads and docstores, BM25 indexes", plan.caches))
    width = max(len(name) for name, _ in rows)
    print(f"estimate{'':<{width - 8}}  {'disk':>10}  {'GPU-hours (H100, assumed 100 TFLOP/s)':>10}")
    for name, cost in rows:
        print(f"{name:<{width}}  {full_plan.human(cost.disk):>10}  {cost.gpu_hours:>10.2f}")
    disk, hours = sum(c.disk for _, c in rows), sum(c.gpu_hours for _, c in rows)
    print(f"{'total':<{width}}  {full_plan.human(disk):>10}  {hours:>10.2f}")


def check_disk(plan: Plan, where: Path) -> str | None:
    """One line when the disk holding `where` has less free space than the plan's estimate, else None."""
    if plan.caches is None:
        return None
    import full_plan

    need, free = plan_disk(plan), full_plan.free_bytes(where)
    if free < need:
        return (
            f"the plan needs about {full_plan.human(need)} of disk (estimate: --dry-run lists it per step) but "
            f"{where} has {full_plan.human(free)} free"
        )
    return None


def execute(plan: Plan, times_file: Path) -> int:
    short = check_disk(plan, times_file.parent)
    if short is not None:
        print(f"paper_mini: {short}", file=sys.stderr)
        return 1
    times_file.parent.mkdir(parents=True, exist_ok=True)
    for path, text in plan.configs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for link, target in plan.links.items():
        if not (link.is_symlink() or link.exists()):  # a real result there is kept
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    total = time.perf_counter()
    for step in plan.steps:
        if step.finished():
            print(f"== {step.name}: done already ({step.done})", flush=True)
            continue
        argv = step.command()
        print(f"== {step.name}\n$ {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(argv)
        seconds = time.perf_counter() - start
        with open(times_file, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}\t{step.name}\t{seconds:.0f}\t{code}\n")
        if code != 0:
            print(f"paper_mini: step failed (exit {code}): {step.name}; rerun to resume", file=sys.stderr)
            return code
    print(f"all steps done in {time.perf_counter() - total:.0f} s; step times in {times_file}")
    return check_report(plan, times_file.parent / "report")


SAME_SCORES_TOLERANCE = 2e-4  # nDCG@10: the fp16 store against fp32 texts (0.02 points)


def check_report(plan: Plan, folder: Path) -> int:
    """--smoke: every family is a row of the written report, and each stored family scores from its store as from
    the texts (why the plan scores effectiveness from the texts); one line and exit 1 if not."""
    if not plan.check_report:
        return 0
    tables = "".join(p.read_text(encoding="utf-8") for p in sorted(folder.rglob("table.md")))
    missing = [name for name in plan.check_report if f"| {name} " not in tables]
    if missing:
        print(f"paper_mini: the report in {folder} has no row for {missing}", file=sys.stderr)
        return 1
    print(f"report in {folder}: a row for every family ({', '.join(plan.check_report)})")
    for stored, texts in plan.same_scores:
        try:
            values = [json.loads((f / "metrics.json").read_text())["measures"]["nDCG@10"] for f in (stored, texts)]
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"paper_mini: {stored} has no nDCG@10 to compare ({type(err).__name__})", file=sys.stderr)
            return 1
        print(f"{stored.name}: nDCG@10 {values[0]:.4f} from its store, {values[1]:.4f} from the texts")
        if abs(values[0] - values[1]) > SAME_SCORES_TOLERANCE:
            print(f"paper_mini: {stored.name} scores differently from its store and from the texts", file=sys.stderr)
            return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the paper's recipe (GPU and internet)")
    parser.add_argument("--dry-run", action="store_true", help="check every command and data name; run nothing")
    parser.add_argument(
        "--families", default=os.environ.get("FAMILIES") or "default", help="default | all | comma list (FAMILIES=all)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="mini: train and evaluate every student on seeds 12 to 11+N (seed 12 is the table's; N >= 1)",
    )
    parser.add_argument("--teacher-gap", action="store_true", help="train and evaluate MICE recipe variants")
    parser.add_argument("--checkpoints", default=None, help="default checkpoints/paper-mini (or paper-full)")
    parser.add_argument("--results", default=None, help="default results/paper-mini (or paper-full)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="with --full: every step of the --full plan on local fixtures registered under the same ir_datasets "
        "ids, tiny models and a handful of steps (offline; benchmarks/full_smoke.py)",
    )
    parser.add_argument("--device", default=os.environ.get("DEVICE", "auto"))
    parser.add_argument(
        "--dtype",
        default=os.environ.get("DTYPE", "fp32"),
        choices=["fp32", "bf16", "fp16"],
        help="--full: evaluation and latency dtype (fp32: the paper's; training uses bf16 autocast on CUDA)",
    )
    parser.add_argument(
        "--train-dtype",
        default=os.environ.get("TRAIN_DTYPE", "auto"),
        choices=["auto", "fp32", "bf16"],
        help="every training's train --dtype (auto: bf16 autocast on CUDA, fp32 elsewhere; bf16 on a CPU with bf16 "
        "arithmetic trains 1.5-1.7x faster)",
    )
    parser.add_argument(
        "--teacher-file",
        default="data/bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv",
        help="--full: Hofstaetter et al.'s ensemble teacher scores (pos neg qid pos_id neg_id)",
    )
    parser.add_argument(
        "--micebench", default=os.environ.get("MICEBENCH", str(Path(sys.executable).parent / "micebench"))
    )
    args = parser.parse_args(argv)
    if args.smoke and not args.full:
        parser.error("--smoke checks the --full plan: add --full")
    if args.seeds < 1 or (args.full and args.seeds != 1):
        parser.error("--seeds N (N >= 1) is the miniature's; --full trains the paper's 5 seeds")
    size = "paper-full-smoke" if args.smoke else "paper-full" if args.full else "paper-mini"
    args.checkpoints = args.checkpoints or f"checkpoints/{size}"
    args.results = args.results or f"results/{size}"
    return args


def prepare_smoke(args: argparse.Namespace) -> None:
    """--smoke: write the fixtures and the tiny base model, point the plan at them and set the environment the
    commands run under (a private ir_datasets home and cache, no mirror, offline)."""
    import full_smoke

    root = Path(args.checkpoints) / "fixtures"
    paths = full_smoke.build(root)
    os.environ.update(full_smoke.environment(root))
    os.environ.pop("MICEBENCH_DATA", None)
    full_smoke.register(root)  # in this process too: the dry run resolves the ids
    args.smoke_root, args.smoke_base = str(root), paths["base"]
    args.teacher_file, args.micebench = paths["teacher_file"], paths["micebench"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.smoke:
            prepare_smoke(args)
        plan = build_plan(args)
    except PlanError as err:
        print(f"paper_mini: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(plan)
    return execute(plan, Path(args.results) / "step-times.tsv")


if __name__ == "__main__":
    sys.exit(main())
