"""Per-sample gradient norms of a label-free loss (Wang et al. 2022, "gradnorm"), batched.

The reference code runs each sample alone (batch size 1, model in eval mode), back-propagates
a loss built from the model's own prediction p = softmax(f(x)) and scores the sample by the
SUM over parameter tensors of each tensor's gradient L2 norm (not one global norm):

- expected-gradnorm:  L = sum_c p_c * CE(f(x), c)   (p not detached, as in the reference code)
- entropy-gradnorm:   L = H(p) = -sum_c p_c log p_c

Note: CE(f(x), c) = -log p_c, so the two losses are the same function of the logits and give
the same gradients; the two names are kept because the companion paper reports both.

Here the per-sample gradients come from ``torch.func`` (``functional_call`` + ``vmap`` +
``grad``) over a batch at once instead of a Python loop per sample. With the model in eval
mode BatchNorm uses its running statistics, so each sample's gradient is exactly what the
batch-size-1 loop gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..data import VolumeSource
from ..progress import QUIET, Progress, RunContext
from ..recipe import check
from .base import QueryContext, Selection, register
from .selection import top_m


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


def expected_loss(logits: torch.Tensor) -> torch.Tensor:
    """sum_c p_c * CE(logits, c) for one sample's logits (C,), p = softmax(logits) not detached."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return (log_p.exp() * -log_p).sum()


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) for one sample's logits (C,)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum()


LABEL_FREE_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "expected": expected_loss,
    "entropy": entropy_loss,
}


def per_sample_grad_norms(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]
                          ) -> torch.Tensor:
    """Sum over parameter tensors of ||dL(x_i)/dW||_2 for each sample x_i of the batch ``x``; shape (B,).

    The model must be in eval mode (BatchNorm running statistics), as in the reference code.
    Parameters that do not get a gradient contribute a zero norm.
    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def sample_loss(p, b, xi):
        out = functional_call(model, (p, b), (xi.unsqueeze(0),))
        return loss_fn(_logits(out)[0])

    grads = vmap(grad(sample_loss), in_dims=(None, None, 0))(params, buffers, x)
    norms = [g.flatten(1).float().norm(dim=1) for g in grads.values()]
    return torch.stack(norms, dim=1).sum(dim=1)


def gradnorm_scores(
    model: nn.Module,
    source: VolumeSource,
    indices: np.ndarray,
    device: torch.device,
    loss: str = "expected",
    batch_size: int = 16,
    *,
    run: RunContext = QUIET,
) -> np.ndarray:
    """Per-sample gradient-norm scores of volumes ``indices``, ``batch_size`` samples per vmap call.

    Memory per call is about ``batch_size`` x the model's parameter size (one gradient per
    sample) plus the activations; float32 throughout (no autocast: norms of small gradients).
    """
    loss_fn = LABEL_FREE_LOSSES[loss]
    indices = np.asarray(indices, dtype=np.int64)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(indices), batch_size):
            run.check_cancel()
            chunk = indices[start : start + batch_size]
            x = torch.from_numpy(source.read(chunk)).unsqueeze(1).to(device)
            out.append(per_sample_grad_norms(model, x, loss_fn))
            run.emit(Progress("score", min(start + batch_size, len(indices)), len(indices)))
    finally:
        model.train(was_training)
    return torch.cat(out).double().cpu().numpy() if out else np.empty(0)


@dataclass(frozen=True)
class Options:
    batch_size: int = 16  # samples per vmap call (memory ~ this x the model's size)

    def validate(self, section: str) -> None:
        check(1 <= self.batch_size <= 4096, f"{section}.batch_size",
              "must be between 1 and 4096")


COST = "one forward and backward of the teacher per candidate (batched with vmap)"


def _gradnorm(ctx: QueryContext, candidates: np.ndarray, m: int, loss: str, opts: Options) -> Selection:
    scores = gradnorm_scores(ctx.teacher, ctx.source, candidates, ctx.device, loss, opts.batch_size,
                             run=ctx.run)
    return Selection(*top_m(candidates, scores, m))


@register("gradnorm-expected", summary="gradient norm of the expected loss (gradnorm)", cost=COST, options=Options,
          old_prefix="gradnorm")
def gradnorm_expected_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    """expected-gradnorm (Wang et al. 2022): top M by the summed per-tensor gradient norms."""
    return _gradnorm(ctx, candidates, m, "expected", opts)


@register("gradnorm-entropy", summary="gradient norm of the prediction entropy (gradnorm)", cost=COST,
          options=Options, old_prefix="gradnorm")
def gradnorm_entropy_query(ctx: QueryContext, candidates: np.ndarray, m: int, opts: Options) -> Selection:
    """entropy-gradnorm (Wang et al. 2022): top M by the summed per-tensor gradient norms."""
    return _gradnorm(ctx, candidates, m, "entropy", opts)
