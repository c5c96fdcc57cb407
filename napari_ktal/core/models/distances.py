"""Teacher-student disagreement scores: the knowledge-transfer uncertainty.

The paper's score for a volume x is KL( softmax(T(x)) || softmax(S(x)) ): the teacher's
posterior is the reference distribution. In PyTorch's argument order that is
``kl_div(log_softmax(S), softmax(T))``. Ablation alternatives: Jensen-Shannon and the
squared difference of the two probability vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def kl_score(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_T || p_S) = sum_c p_T,c (log p_T,c - log p_S,c); shape (B,)."""
    log_t = F.log_softmax(teacher_logits.float(), dim=1)
    log_s = F.log_softmax(student_logits.float(), dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(dim=1)


def js_score(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Jensen-Shannon divergence of the two posteriors (natural log); shape (B,)."""
    p_t = F.softmax(teacher_logits.float(), dim=1)
    p_s = F.softmax(student_logits.float(), dim=1)
    log_m = (0.5 * (p_t + p_s)).clamp_min(torch.finfo(torch.float32).tiny).log()
    kl_tm = F.kl_div(log_m, p_t, reduction="none").sum(1)
    kl_sm = F.kl_div(log_m, p_s, reduction="none").sum(1)
    return 0.5 * (kl_tm + kl_sm)


def mse_score(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference of the two probability vectors; shape (B,)."""
    diff = F.softmax(teacher_logits.float(), 1) - F.softmax(student_logits.float(), 1)
    return diff.pow(2).mean(dim=1)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": kl_score,
    "js": js_score,
    "mse": mse_score,
}
