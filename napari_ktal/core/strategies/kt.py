"""Knowledge transfer, the paper's method: the teacher-student disagreement of the posteriors."""

from __future__ import annotations

import numpy as np

from ..models import DISTANCES
from .base import QueryContext, Selection, register
from .selection import top_m


@register("kt", summary="knowledge transfer: teacher-student distance of the posteriors (the paper)",
          cost="one pass of teacher and student over the candidates", student=True)
def knowledge_transfer(ctx: QueryContext, candidates: np.ndarray, m: int, opts) -> Selection:
    """Top M by the distance of the two softmax outputs (KL(teacher || student) by default)."""
    t_logits, s_logits = ctx.forward([ctx.teacher, ctx.student], candidates)
    scores = DISTANCES[ctx.score_distance](t_logits, s_logits).numpy()
    return Selection(*top_m(candidates, scores, m))
