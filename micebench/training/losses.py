"""Ranking losses: Margin-MSE (Hofstaetter et al.), binary cross-entropy, listwise softmax cross-entropy."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def margin_mse(
    student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_pos: torch.Tensor, teacher_neg: torch.Tensor
) -> torch.Tensor:
    """Mean squared error between the student's and the teacher's margins s(q, d+) - s(q, d-)."""
    return F.mse_loss(student_pos - student_neg, teacher_pos - teacher_neg)


def bce(student_pos: torch.Tensor, student_neg: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits: positives labelled 1, negatives 0 (mean over all pairs)."""
    logits = torch.cat([student_pos, student_neg])
    labels = torch.cat([torch.ones_like(student_pos), torch.zeros_like(student_neg)])
    return F.binary_cross_entropy_with_logits(logits, labels)


def listwise(student_pos: torch.Tensor, student_neg: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the positive against its negatives, per query ((B,) and (B, n) scores)."""
    if student_neg.dim() == 1:
        student_neg = student_neg[:, None]
    scores = torch.cat([student_pos[:, None], student_neg], dim=1)
    return F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))


LOSSES = ("margin-mse", "bce", "listwise")
