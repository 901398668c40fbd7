"""The resumable training loop (AdamW, linear warm-up and decay, grad-norm clipping, Margin-MSE by default).

Batches are drawn from the training triples by a generator seeded with (seed, step), so the data position is
the step number; model, optimiser, scheduler and RNG states are saved in `<output>/last/`, and `--resume`
continues to the same final weights as an uninterrupted run. The best validation checkpoint (or the final one
without validation) is written to `<output>/best/` as a normal checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micebench.errors import DataError, MicebenchError, TrainingDiverged, first_line
from micebench.models.checkpoints import TRAINING_MARKER
from micebench.rankers.base import Trainable
from micebench.training.data import TrainingSet
from micebench.training.losses import LOSSES, bce, listwise, margin_mse


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (hashed; `--resume` refuses a different one)."""

    model: str
    init: str
    train: str
    loss: str = "margin-mse"
    steps: int = 125_000
    batch_size: int = 32
    lr: float = 7e-6
    warmup: int = 5000
    seed: int = 12
    grad_accumulation: int = 1
    teacher: str | None = None
    teacher_scores: str | None = None
    schedule: str | None = None
    merge_layer: int | None = None
    top_layers: int | None = None
    max_length: int | None = None  # None: the student's own default
    negatives_depth: int = 100
    negatives_per_query: int = 20
    group_size: int = 2
    validate: str | None = None
    validate_top_k: int = 20
    every: int = 1000
    output: str = "checkpoints/run"
    device: str = "auto"
    dtype: str = "auto"  # the training forward's precision: auto (bf16 autocast on CUDA, else fp32), fp32, bf16
    extra: dict[str, Any] = field(default_factory=dict)
    holdout: int = 0  # training queries held out (a fixed seeded split) to validate on instead of --validate
    patience: int = 0  # stop after this many validations without improvement (0: train to --steps)
    teacher_norm: str = "none"  # "margin-rms": teacher scores divided by the RMS of the training set's margins

    def fingerprint(self) -> str:
        # options added after the first release are hashed only when set, so older runs still resume
        later = {"holdout": 0, "patience": 0, "teacher_norm": "none", "dtype": "auto"}
        keep = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("output", "device", "every", "patience") and not (k in later and later[k] == v)
        }
        keep["bf16"] = True  # the field `dtype` replaced (always true then): hashed as before so older runs resume
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain values, so `state.pt` loads with `weights_only=True` (no pickle)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)}
        | {"has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (numpy_state["name"], keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def batch_indices(seed: int, step: int, size: int, population: int) -> np.ndarray:
    """The triples of one step: a function of (seed, step) only, so resuming needs no data position."""
    return np.random.default_rng([seed, step]).choice(population, size=min(size, population), replace=False)


class Trainer:
    """Runs a TrainConfig on a training set with a student: any `Trainable` ranker (the module the loss calls)."""

    def __init__(self, config: TrainConfig, student: Trainable, training: TrainingSet, validator: Any = None):
        if config.loss not in LOSSES:
            raise MicebenchError(f"unknown loss {config.loss!r} (use {', '.join(LOSSES)})")
        if config.loss == "margin-mse" and any(t.teacher_pos is None for t in training.triples[:1]):
            raise MicebenchError("margin-mse needs teacher scores (--teacher or --teacher-scores)")
        if config.steps < 1 or config.batch_size < 1 or config.grad_accumulation < 1:
            raise MicebenchError("--steps, --batch-size and gradient accumulation must be at least 1")
        if config.group_size < 2:
            raise MicebenchError(
                f"--group-size must be at least 2 (one positive, one negative), not {config.group_size}"
            )
        if config.group_size > 2 and config.loss != "listwise":
            raise MicebenchError("--group-size above 2 needs --loss listwise (margin-mse and bce use triples)")
        check_recipe_names(config)
        #: the device type whose bf16 autocast wraps the training forward (None: fp32)
        self.autocast = autocast_device(config.dtype, student.device)
        self.compute = "bf16 autocast" if self.autocast else "fp32"
        margins = teacher_margins(training)
        check_teacher_scores(training, margins)
        self.config, self.student, self.training, self.validator = config, student, training, validator
        self.output = Path(config.output)
        self.module = student.trainable_module()
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, min(config.warmup, config.steps), config.steps)
        self.negatives: dict[str, list[str]] = {}  # per query, in first-seen order: the grouped loss draws from it
        if config.group_size > 2:
            by_query: dict[str, dict[str, None]] = {}
            for t in training.triples:
                by_query.setdefault(t.qid, {})[t.neg] = None
            self.negatives = {qid: list(negs) for qid, negs in by_query.items()}
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best: float | None = None
        #: teacher scores are divided by this before the loss (1 unless --teacher-norm margin-rms)
        self.teacher_scale = 1.0
        if config.teacher_norm == "margin-rms" and margins.size:
            rms = float(np.sqrt(np.mean(margins**2)))
            self.teacher_scale = rms if rms > 0 else 1.0
        from micebench.training.health import constant_loss

        self.constant_loss = constant_loss(config.loss, margins / self.teacher_scale, config.group_size)
        self.health: dict[str, Any] | None = None  # the verdict of training.health, once the run has ended
        self._scale: list[dict[str, float]] = []  # score-scale statistics of the current step's micro-batches

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def save_state(self) -> None:
        folder = self.output / "last"
        tmp = self.output / f".last.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(
            {
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": _rng_state(),
                "step": self.step,
                "history": self.history,
                "best": self.best,
                "fingerprint": self.config.fingerprint(),
            },
            tmp / "state.pt",
        )
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def load_state(self) -> None:
        path = self.output / "last" / "state.pt"
        if not path.is_file():
            raise MicebenchError(f"nothing to resume in {self.output} (no last/state.pt)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged, foreign or tampered file: never unpickle arbitrary objects
            raise MicebenchError(f"cannot resume from {path}: {first_line(err)}") from None
        if state["fingerprint"] != self.config.fingerprint():
            raise MicebenchError(f"{self.output} was trained with another configuration; --resume refuses to mix them")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.step, self.history, self.best = state["step"], state["history"], state["best"]

    # -- one step -----------------------------------------------------------------------------------------------
    def _scores(self, queries: list[str], docs: list[str]) -> torch.Tensor:
        with torch.autocast(self.autocast or "cpu", dtype=torch.bfloat16, enabled=self.autocast is not None):
            return self.student.score_pairs(queries, docs).float()

    def loss_on(self, triples: list[Any], keys: Any = None) -> torch.Tensor:
        """The loss of one (micro-)batch; `keys` are the triples' indices in the training set (they seed the
        grouped loss's draws; default 0..n-1)."""
        if self.config.loss == "listwise" and self.config.group_size > 2:
            return self.grouped_listwise_loss(triples, range(len(triples)) if keys is None else keys)
        queries = [self.training.queries[t.qid] for t in triples]
        docs = [self.training.docs[t.pos] for t in triples] + [self.training.docs[t.neg] for t in triples]
        scores = self._scores(queries + queries, docs)
        pos, neg = scores[: len(triples)], scores[len(triples) :]
        stats = score_scale(pos.detach(), neg.detach())
        if self.config.loss == "margin-mse":
            device = scores.device
            tp = torch.tensor([t.teacher_pos for t in triples], device=device) / self.teacher_scale
            tn = torch.tensor([t.teacher_neg for t in triples], device=device) / self.teacher_scale
            stats |= score_scale(tp, tn, "teacher")
            # the share of pairs the student orders as the teacher does (scale-free: is it learning the ranking?)
            stats["agreement"] = float(((pos.detach() - neg.detach()) * (tp - tn) > 0).float().mean())
            self._scale.append(stats)
            return margin_mse(pos, neg, tp, tn)
        self._scale.append(stats)
        return bce(pos, neg) if self.config.loss == "bce" else listwise(pos, neg)

    def grouped_listwise_loss(self, triples: list[Any], keys: Any) -> torch.Tensor:
        """Localized contrastive estimation: each triple's positive against `group_size - 1` negatives of its query.

        The extra negatives are drawn by a generator seeded with (seed, step, triple index), so resuming stays exact
        and micro-batches of one step draw independently.
        """
        group = self.config.group_size - 1
        queries, docs = [], []
        for key, t in zip(keys, triples, strict=True):
            others = [n for n in self.negatives[t.qid] if n != t.neg]
            rng = np.random.default_rng([self.config.seed, self.step, int(key)])
            extra = [others[i] for i in rng.choice(len(others), size=min(group - 1, len(others)), replace=False)]
            chosen = ([t.neg] + extra) * group  # repeat when a query has fewer negatives than the group wants
            queries.extend([self.training.queries[t.qid]] * (group + 1))
            docs.extend(self.training.docs[d] for d in [t.pos] + chosen[:group])
        scores = self._scores(queries, docs).view(len(triples), group + 1)
        self._scale.append(score_scale(scores[:, 0].detach(), scores[:, 1].detach()))
        return listwise(scores[:, 0], scores[:, 1:])

    def train_step(self) -> float:
        self.module.train()
        indices = batch_indices(self.config.seed, self.step, self.config.batch_size, len(self.training.triples))
        chunks = np.array_split(indices, self.config.grad_accumulation)
        total = 0.0
        self._scale = []
        for chunk in chunks:
            loss = self.loss_on([self.training.triples[i] for i in chunk], chunk) * (len(chunk) / len(indices))
            if not torch.isfinite(loss.detach()):
                # stop before the optimiser step: no weight becomes non-finite, best/ keeps what it held
                raise TrainingDiverged(
                    f"training diverged: the loss is {float(loss.detach())} at step {self.step + 1} "
                    f"(lower --lr, or check the teacher scores); the last checkpoint in {self.output / 'last'} "
                    "is from before"
                )
            loss.backward()
            total += float(loss.detach())
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.last_scale = (
            {k: float(np.mean([s[k] for s in self._scale])) for k in self._scale[0]} if self._scale else {}
        )
        self.last_scale["grad_norm"] = float(norm)
        return total

    # -- the loop -----------------------------------------------------------------------------------------------
    def run(self, resume: bool = False, max_minutes: float | None = None, stop_after: int | None = None) -> Path:
        """Train to `steps` (or until `max_minutes`/`stop_after`, saving a resumable state); returns best/."""
        from micebench.progress import progress_bar

        if resume:
            self.load_state()
        elif (self.output / "last").exists():
            raise MicebenchError(f"{self.output} already holds a training run (use --resume, or another --output)")
        self.output.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with progress_bar(f"training {self.student.name}", total=self.config.steps, unit="steps") as bar:
            bar.advance(self.step)
            spent = self.patience_spent()  # it changes only with a validation: not re-read from history every step
            while self.step < self.config.steps and not spent:
                loss = self.train_step()
                record = {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0], **self.last_scale}
                if self.validator is not None and (
                    self.step % self.config.every == 0 or self.step == self.config.steps
                ):
                    record["validation"] = self._validate()
                self.history.append(record)
                if "validation" in record:
                    spent = self.patience_spent()
                bar.advance(1)
                if self.step % self.config.every == 0:
                    self.save_state()
                    recent = [r["loss"] for r in self.history[-self.config.every :]]
                    mean_loss = sum(recent) / len(recent)
                    text = f"step {self.step}/{self.config.steps} loss {mean_loss:.4f} lr {record['lr']:.2e}"
                    if "validation" in record:
                        text += f" validation {record['validation']:.4f}"
                    bar.describe(text)
                out_of_time = max_minutes is not None and (time.monotonic() - started) / 60 >= max_minutes
                if out_of_time or (stop_after is not None and self.step >= stop_after):
                    self.save_state()
                    self.write_curves()
                    return self.output / "best"
        if self.patience_spent() and self.history and "stop" not in self.history[-1]:
            self.history[-1]["stop"] = "patience"  # curves.csv says the run ended early, by the rule
        self.save_state()
        self.health = self.judge()
        if self.validator is None:
            self._save_best(None)
        self.write_curves()
        return self.output / "best"

    def patience_spent(self) -> bool:
        """True when `patience` validations in a row have not improved on the best one (the convergence rule).

        Counted only once the best value is at or above the first stage the student re-ranks: a student still
        below it has not begun to learn the ranking (it may be building its score scale) and trains on, to the cap.
        """
        if self.config.patience < 1:
            return False
        values = [r["validation"] for r in self.history if r.get("validation") is not None]
        if not values:
            return False
        first_stage = getattr(self.validator, "first_stage", None)
        if first_stage is not None and max(values) < first_stage:
            return False
        best_at = max(range(len(values)), key=lambda i: (values[i], -i))  # the first best
        return len(values) - 1 - best_at >= self.config.patience

    def judge(self) -> dict[str, Any]:
        """Whether this run learned (see training.health), from its records."""
        from micebench.training.health import verdict

        first_stage = getattr(self.validator, "first_stage", None)
        return verdict(self.history, min(self.config.warmup, self.config.steps), self.constant_loss, first_stage)

    def _validate(self) -> float:
        value = float(self.validator(self.student))
        if self.best is None or value > self.best:
            self.best = value
            self._save_best(value)
        return value

    def _save_best(self, value: float | None) -> None:
        meta = {
            "config": asdict(self.config),
            "step": self.step,
            "validation": value,
            "training_set": self.training.source,
            "triples": len(self.training.triples),
            "teacher_scale": self.teacher_scale,
            "compute": self.compute,
            "learned": self.health,
        }
        tmp = self.output / f".best.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.student.save_checkpoint(tmp)
        (tmp / TRAINING_MARKER).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        self.write_card(tmp, self.step, value, [*self.history, {"step": self.step, "validation": value}])
        shutil.rmtree(self.output / "best", ignore_errors=True)
        os.replace(tmp, self.output / "best")

    def write_card(self, folder: Path, step: int, value: float | None, history: list[dict[str, Any]]) -> None:
        """The checkpoint's model card (README.md): recipe, validation curve up to now, how to load it."""
        from micebench.training.model_card import CardFacts, write_model_card

        facts = CardFacts(
            family=self.student.name,  # type: ignore[attr-defined]
            step=step,
            value=value,
            measure=getattr(self.validator, "measure", "nDCG@10"),
            validation=self.config.validate,
            history=history,
            training_set=self.training.source,
            triples=len(self.training.triples),
            learned=self.health,
            compute=self.compute,
        )
        write_model_card(folder, asdict(self.config), facts, self.output.resolve().name)

    def write_curves(self) -> None:
        """curves.csv and curves.png (loss, learning rate, validation) in the output folder."""
        import pandas as pd

        if not self.history:
            return
        best = self.output / "best" / TRAINING_MARKER
        if best.is_file():  # the best checkpoint's card gets the whole validation curve, and the run's verdict
            meta = json.loads(best.read_text(encoding="utf-8"))
            if self.health is not None:
                from micebench.atomic import atomic_write_text

                meta["learned"] = self.health  # known only at the end; best/ was saved while training
                atomic_write_text(best, json.dumps(meta, indent=2, default=str) + "\n")
            self.write_card(best.parent, meta["step"], meta["validation"], self.history)
        frame = pd.DataFrame(self.history)
        frame.to_csv(self.output / "curves.csv", index=False)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2 if "validation" in frame else 1, figsize=(10, 3.6), squeeze=False)
        window = max(1, len(frame) // 50)
        axes[0][0].plot(frame["step"], frame["loss"].rolling(window, min_periods=1).mean(), color="0.1")
        axes[0][0].set_xlabel("step")
        axes[0][0].set_ylabel(f"{self.config.loss} loss (moving average of {window})")
        if "validation" in frame:
            v = frame.dropna(subset=["validation"])
            axes[0][1].plot(v["step"], v["validation"], marker="o", color="0.1")
            axes[0][1].set_xlabel("step")
            axes[0][1].set_ylabel("validation nDCG@10")
        fig.tight_layout()
        fig.savefig(self.output / "curves.png", dpi=120)
        plt.close(fig)


#: --teacher-norm: "none" keeps the teacher's scores; "margin-rms" divides them by the root mean square of the
#: training set's teacher margins, so the margins the student must reach have unit size whatever the teacher
TEACHER_NORMS = ("none", "margin-rms")
#: `train --dtype`: auto (bf16 autocast on CUDA, fp32 elsewhere: the default since the first release), fp32, bf16
TRAIN_DTYPES = ("auto", "fp32", "bf16")


def check_recipe_names(config: TrainConfig) -> None:
    """`--teacher-norm` and `--dtype` among their names, in one line naming the flag (before any work)."""
    if config.teacher_norm not in TEACHER_NORMS:
        raise MicebenchError(f"unknown --teacher-norm {config.teacher_norm!r} (use {', '.join(TEACHER_NORMS)})")
    if config.dtype not in TRAIN_DTYPES:
        raise MicebenchError(f"unknown --dtype {config.dtype!r} for training (use {', '.join(TRAIN_DTYPES)})")


def autocast_device(dtype: str, device: Any) -> str | None:
    """The device type whose bf16 autocast wraps the training forward for `--dtype` (one of TRAIN_DTYPES) on
    `device`, or None (fp32).

    Master weights, optimiser state and the loss stay fp32 (autocast), as in mixed-precision GPU training. bf16 on
    a CPU without bf16 arithmetic is allowed (torch emulates it) with a warning: it is slower than fp32 there.
    """
    kind = torch.device(device).type
    if dtype == "fp32" or (dtype == "auto" and kind != "cuda"):
        return None
    if kind not in ("cuda", "cpu"):
        raise MicebenchError(f"--dtype bf16 trains on cuda or cpu, not {kind} (use --dtype fp32)")
    if kind == "cpu":
        from micebench.models.precision import cpu_bf16_native

        if not cpu_bf16_native():
            import sys

            print(
                "warning: this CPU has no bf16 arithmetic: bf16 training is emulated, slower than --dtype fp32",
                file=sys.stderr,
                flush=True,
            )
    return kind


def teacher_margins(training: TrainingSet) -> np.ndarray:
    """Every triple's teacher margin (positive minus negative score) as one array; empty without a teacher."""
    if not training.triples or training.triples[0].teacher_pos is None:
        return np.zeros(0)
    return np.fromiter((t.teacher_pos - t.teacher_neg for t in training.triples), dtype=np.float64)


def check_teacher_scores(training: TrainingSet, margins: np.ndarray) -> None:
    """Refuse non-finite teacher scores in one line (a NaN target trains NaN weights)."""
    bad = np.flatnonzero(~np.isfinite(margins))
    if bad.size:
        t = training.triples[int(bad[0])]
        if not (math.isfinite(t.teacher_pos) and math.isfinite(t.teacher_neg)):
            raise DataError(
                f"{training.source}: non-finite teacher score for query {t.qid!r} "
                f"(positive {t.pos!r}: {t.teacher_pos}, negative {t.neg!r}: {t.teacher_neg})"
            )
        raise DataError(
            f"{training.source}: the teacher margin of query {t.qid!r} ({t.pos!r} against {t.neg!r}) overflows"
        )


def score_scale(pos: torch.Tensor, neg: torch.Tensor, who: str = "student") -> dict[str, float]:
    """The scale of one batch's scores: their standard deviation and the mean |positive - negative| margin."""
    both = torch.cat([pos, neg]).float()
    return {
        f"{who}_std": float(both.std(unbiased=False)),
        f"{who}_margin": float((pos - neg).abs().float().mean()),
    }


def make_validator(dataset: Any, top_k: int) -> Any:
    """A function student -> the dataset's validation measure (its registry says: nDCG@10, RR@10 for MS MARCO dev)
    on its first-stage top-k."""
    from micebench.firststage.candidates import first_stage
    from micebench.frames import candidates_frame, frame_to_run

    if not dataset.judged_queries():
        raise MicebenchError(f"validation set {dataset.name!r} has no judged queries")
    frame = candidates_frame(dataset, first_stage(dataset, "auto", top_k), with_text=True)
    measure = dataset.validation_measure
    baseline = dataset.evaluate(frame_to_run(frame), [measure]).means[measure]

    def validate(student: Any) -> float:
        student.trainable_module().eval()
        with torch.inference_mode():
            ranked = student.rerank(frame)
        value = dataset.evaluate(frame_to_run(ranked), [measure]).means[measure]
        return value if not math.isnan(value) else 0.0

    validate.measure = measure  # type: ignore[attr-defined]  # named in the model card
    validate.first_stage = None if math.isnan(baseline) else float(baseline)  # type: ignore[attr-defined]
    return validate
