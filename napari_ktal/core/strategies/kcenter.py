"""Greedy k-center selection (Sener & Savarese 2018, "Core-Set"), batched with torch.

Each pick is the point farthest (Euclidean) from every center chosen so far; its distance
at pick time is its score, so scores come out non-increasing. The cost is one pass over
the points per pick, O(n_select * N * D), on whatever device the points are on.
"""

from __future__ import annotations

import numpy as np
import torch


def _tensor(x, device=None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.to(device=device, dtype=torch.float32)


def min_distances(points: torch.Tensor, centers: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Distance of every point to its nearest center, shape (N,); centers in chunks to bound memory."""
    out = torch.full((len(points),), float("inf"), device=points.device)
    for start in range(0, len(centers), chunk):
        d = torch.cdist(points, centers[start : start + chunk], compute_mode="donot_use_mm_for_euclid_dist")
        out = torch.minimum(out, d.min(dim=1).values)
    return out


def kcenter_greedy(points, n_select: int, centers=None, device: torch.device | str | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center order over ``points`` (N, D) given already-covered ``centers`` (L, D).

    Returns (positions into ``points`` in pick order, distance to the nearest center at pick
    time). With no centers, the first pick is the point farthest from the points' mean (its
    score is that distance); pass ``centers=zeros((1, D))`` to measure from the origin
    instead (noise stability does: a zero change is a perfectly stable sample).
    Ties go to the lowest position. ``n_select`` is capped at N.
    """
    x = _tensor(points, device)
    if x.ndim != 2:
        raise ValueError(f"points must be (N, D), got shape {tuple(x.shape)}")
    n_select = min(int(n_select), len(x))
    if n_select <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if centers is not None and len(centers):
        c = _tensor(centers, x.device)
        if c.ndim != 2 or c.shape[1] != x.shape[1]:
            raise ValueError(f"centers must be (L, {x.shape[1]}), got shape {tuple(c.shape)}")
        dist = min_distances(x, c)
    else:
        dist = (x - x.mean(dim=0, keepdim=True)).norm(dim=1)
    order = torch.empty(n_select, dtype=torch.int64, device=x.device)
    score = torch.empty(n_select, dtype=torch.float32, device=x.device)
    for k in range(n_select):  # one device op chain per pick; no host sync inside the loop
        i = torch.argmax(dist)
        order[k] = i
        score[k] = dist[i]
        dist = torch.minimum(dist, (x - x[i]).norm(dim=1))
        dist[i] = -1.0  # never picked twice (duplicates of a pick have distance 0, not -1)
    return order.cpu().numpy(), score.double().cpu().numpy()
