"""Knowledge-transfer losses between teacher and student (METHOD.md).

The paper's attention transfer: for a stage activation A with C channels, the attention
map is Q = sum_c |A_c|^2 (a 3D map), V = vec(Q), and

    L_trans = sum_l || V_S^l / ||V_S^l||_2 - V_T^l / ||V_T^l||_2 ||_2,

averaged over the batch. Teacher maps are targets: they are detached here, so no
gradient flows into the teacher from the transfer loss. The ablation alternatives
(MSE or L1 on stage features, KL on posteriors) share the same signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """Q = sum over channels of the squared activation, flattened: (B, C, D, H, W) -> (B, D*H*W)."""
    return activation.float().pow(2).sum(dim=1).flatten(1)


def normalized_attention(activation: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """V / ||V||_2 per sample (an all-zero map stays zero)."""
    return F.normalize(attention_map(activation), p=2, dim=1, eps=eps)


def attention_transfer_loss(
    student_stages: Sequence[torch.Tensor], teacher_stages: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Sum over stages of the L2 distance of normalised attention maps, mean over the batch."""
    _check_pairs(student_stages, teacher_stages)
    total = student_stages[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_stages, teacher_stages):
        diff = normalized_attention(s) - normalized_attention(t.detach())
        total = total + diff.norm(p=2, dim=1).mean()
    return total


def feature_mse_loss(student_stages, teacher_stages) -> torch.Tensor:
    """Ablation: mean squared difference of stage features (teacher detached), summed over stages."""
    _check_pairs(student_stages, teacher_stages)
    return sum(F.mse_loss(s.float(), t.detach().float()) for s, t in zip(student_stages, teacher_stages))


def feature_l1_loss(student_stages, teacher_stages) -> torch.Tensor:
    """Ablation: mean absolute difference of stage features (teacher detached), summed over stages."""
    _check_pairs(student_stages, teacher_stages)
    return sum(F.l1_loss(s.float(), t.detach().float()) for s, t in zip(student_stages, teacher_stages))


def posterior_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Ablation: KL(softmax T || softmax S) on posteriors, mean over the batch (teacher detached)."""
    return F.kl_div(
        F.log_softmax(student_logits.float(), 1),
        F.log_softmax(teacher_logits.detach().float(), 1),
        log_target=True,
        reduction="batchmean",
    )


def _check_pairs(student_stages, teacher_stages) -> None:
    if len(student_stages) != len(teacher_stages):
        raise ValueError(f"{len(student_stages)} student stages vs {len(teacher_stages)} teacher stages")
    for i, (s, t) in enumerate(zip(student_stages, teacher_stages)):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(f"stage {i}: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ in size")


#: the recipe's ``[transfer] loss`` -> loss(student_output, teacher_output) (resnet3d.ModelOutput)
TRANSFER_LOSSES: dict[str, Callable] = {
    "at": lambda s, t: attention_transfer_loss(s.stages, t.stages),
    "mse": lambda s, t: feature_mse_loss(s.stages, t.stages),
    "l1": lambda s, t: feature_l1_loss(s.stages, t.stages),
    "kl": lambda s, t: posterior_kl_loss(s.logits, t.logits),
}
