"""Using the unlabeled pool: the encoder pretrained on it (once per project), and a cold-start
batch chosen for typicality and diversity on its features (TypiClust, Hacohen et al. 2022).

The pretrained encoder is stored in ``P/pretrained/`` with what made it (method, settings,
architecture, seed); a recipe that asks for another one trains it again. Every cycle's teacher
starts from it, and the student's one block per stage from the teacher's first block of that
stage, the classifiers from scratch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from ..engine import forward_outputs
from ..engine.contrastive import pretrain_encoder, student_state_from_teacher
from ..models import ResNet3D, ResNetConfig
from ..progress import QUIET, RunContext
from ..project import Project
from ..project.checkpoints import load_state, save_state
from ..recipe import Recipe
from ..seeds import derive_seed

ENCODER = "encoder"


def _wanted(recipe: Recipe, seed: int) -> dict:
    m = recipe.model
    return {"pretrain": dataclasses.asdict(recipe.pretrain), "seed": seed,
            "model": {"depth": m.teacher_depth, "width": m.width, "stem": m.stem}}


def pretrained_state(project: Project, recipe: Recipe, device: torch.device, *, seed: int,
                     run: RunContext = QUIET) -> dict[str, torch.Tensor] | None:
    """The teacher weights pretrained on the project's pool, trained now if the project has none
    for this recipe; None when the recipe asks for no pretraining."""
    if recipe.pretrain.method == "none":
        return None
    want = _wanted(recipe, seed)
    found = load_state(project.paths.pretrained, ENCODER)
    if found is not None and found[1].get("recipe") == want:
        return found[0]
    torch.manual_seed(derive_seed(seed, "pretrain"))
    m = recipe.model
    encoder = ResNet3D.from_config(ResNetConfig(m.teacher_depth, 2, m.width, m.stem))
    result = pretrain_encoder(encoder, project.pool, recipe.pretrain, device, seed=derive_seed(seed, "pretrain-data"),
                              speed=recipe.speed, run=run)
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("fc.")}
    save_state(project.paths.pretrained, ENCODER, state,
               {"recipe": want, "loss": result.loss, "seconds": round(result.seconds, 1), "volumes": result.volumes})
    return state


def stored_pretrained(project: Project, recipe: Recipe) -> dict[str, torch.Tensor] | None:
    """The project's pretrained encoder if it was made for ``recipe``, whatever seed made it; else None.

    For work that judges the cycles trained so far (cross-fitting the labels) and must start from
    the encoder they started from, without pretraining again under another seed."""
    found = load_state(project.paths.pretrained, ENCODER)
    if recipe.pretrain.method == "none" or found is None:
        return None
    made = found[1].get("recipe")
    return found[0] if isinstance(made, dict) and made == _wanted(recipe, made.get("seed")) else None


def initialise_from(state: Mapping[str, torch.Tensor], teacher: ResNet3D, student: ResNet3D) -> None:
    """Teacher and student start from the pretrained teacher (classifiers stay as initialised)."""
    teacher.load_state_dict(dict(state), strict=False)
    student.load_state_dict(student_state_from_teacher(dict(state), student), strict=False)


def pool_features(project: Project, recipe: Recipe, state: Mapping[str, torch.Tensor], device: torch.device, *,
                  run: RunContext = QUIET) -> np.ndarray:
    """The pretrained encoder's embedding of every pool volume, L2-normalised: (N, D)."""
    m = recipe.model
    encoder = ResNet3D.from_config(ResNetConfig(m.teacher_depth, 2, m.width, m.stem))
    encoder.load_state_dict(dict(state), strict=False)
    (emb,) = forward_outputs([encoder.to(device)], project.pool, np.arange(len(project.pool)), device,
                             output="embedding", batch_size=recipe.train.eval_batch_size, speed=recipe.speed,
                             run=run)
    return torch.nn.functional.normalize(emb, dim=1).numpy()


def typiclust(features: np.ndarray, m: int, rng: np.random.Generator, k_neighbours: int = 20,
              min_cluster: int = 5) -> np.ndarray:
    """TypiClust's cold start: k-means into ``m`` clusters, then from each cluster (largest first)
    its most typical point, typicality = 1 / mean distance to its k nearest neighbours in the
    cluster. Clusters smaller than ``min_cluster`` (outliers: junk, an odd volume) give no pick;
    the picks they leave go, in turn, to the next most typical points of the largest clusters."""
    from scipy.cluster.vq import kmeans2

    x = np.asarray(features, np.float64)
    m = min(m, len(x))
    _, assign = kmeans2(x, m, minit="++", seed=rng)
    ranked = []  # per cluster, largest first: its members from most to least typical
    for c in sorted(np.unique(assign), key=lambda c: -(assign == c).sum()):
        members = np.flatnonzero(assign == c)
        if len(members) < min(min_cluster, len(x) // max(m, 1)):
            continue
        d = np.linalg.norm(x[members, None] - x[None, members], axis=2)
        k = max(1, min(k_neighbours, len(members) - 1))
        knn = np.sort(d, axis=1)[:, 1 : k + 1].mean(axis=1) if len(members) > 1 else np.zeros(1)
        ranked.append(members[np.argsort(knn, kind="stable")].tolist())
    chosen: list[int] = []
    depth = 0
    while len(chosen) < m and any(depth < len(r) for r in ranked):
        chosen += [r[depth] for r in ranked if depth < len(r)][: m - len(chosen)]
        depth += 1
    if len(chosen) < m:  # fewer volumes in clusters than picks: the rest at random
        rest = np.setdiff1d(np.arange(len(x)), chosen)
        chosen += rng.choice(rest, size=m - len(chosen), replace=False).tolist()
    return np.asarray(chosen, dtype=np.int64)
