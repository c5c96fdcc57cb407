"""Auxiliary heads: modules a query strategy trains together with the teacher.

Some strategies need more than the teacher and the student: learning loss (LL4AL) trains a
small module that predicts the teacher's loss from its stage activations. Training does not
know which strategy it serves; it trains whatever :class:`AuxiliaryHead` it is given:

    prediction = head(*head.inputs(teacher_output, epoch))   # through DDP when there is one
    teacher loss += head.loss(prediction, per_sample_cross_entropy)

A head is built from plain keyword arguments (kept in ``head.config``), so the other
processes of a multi-GPU run build the same head from ``(type(head), head.config)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models import ModelOutput


class AuxiliaryHead(nn.Module):
    """Base class: subclasses call ``super().__init__(**config)`` with their constructor's arguments."""

    def __init__(self, **config: Any):
        super().__init__()
        self.config = dict(config)

    def inputs(self, teacher_out: ModelOutput, epoch: int) -> tuple[torch.Tensor | tuple, ...]:
        """What ``forward`` gets from the teacher's output at 0-based ``epoch``."""
        raise NotImplementedError

    def loss(self, prediction: torch.Tensor, per_sample_ce: torch.Tensor) -> torch.Tensor:
        """The term added to the teacher's loss (already weighted)."""
        raise NotImplementedError

    def fresh_copy(self) -> AuxiliaryHead:
        """A new, untrained head of the same kind and configuration."""
        return type(self)(**self.config)
