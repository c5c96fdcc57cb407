"""The long jobs the widget runs off the GUI thread; plain functions over the core.

Each takes ``on_progress`` and ``should_stop`` last (see :mod:`napari_ktal.core.progress`),
opens its own :class:`Project` (so a class added in the GUI meanwhile cannot change the
classes of a cycle in flight) and mirrors what the matching ``ktal-cryo`` command does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import KtalError
from ..core.loop.export import ExportResult
from ..core.progress import ProgressCallback, StopFlag


def worker_threads() -> int:
    """Torch threads for a job started from the GUI: all cores but one, which the GUI keeps."""
    return max(1, (os.cpu_count() or 2) - 1)


def warm_up(on_progress: ProgressCallback | None = None, should_stop: StopFlag | None = None) -> None:
    """Import what torch loads lazily when the first optimizer is made (torch._dynamo, sympy).

    That import takes ~1.5 s of mostly GIL-holding work. Run in a worker as soon as a
    project opens, it is done long before the first cycle trains, instead of stalling the
    GUI thread for up to ~0.7 s at a time in the middle of the first training.
    """
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def create_project(root: str | Path, source: str | Path, recipe_name: str, classes: list[str],
                   on_progress: ProgressCallback | None = None, should_stop: StopFlag | None = None) -> Path:
    """Import ``source`` (a folder, an MRC (stack) file or a labels CSV) into a new project."""
    from ..core.project.project import Project
    from ..core.recipe import load_recipe

    project = Project.create(root, source, load_recipe(recipe_name), classes, on_progress, should_stop)
    return project.root


def create_project_from_array(root: str | Path, volumes: np.ndarray, voxel_size: float, name: str,
                              recipe_name: str, classes: list[str], on_progress: ProgressCallback | None = None,
                              should_stop: StopFlag | None = None) -> Path:
    """Import volumes held in memory (an Image layer) by way of a temporary MRC stack file.

    The pool keys become ``k@<name>.mrcs`` (RELION's frame notation), so labels and
    predictions can be traced back to the layer's volumes.
    """
    import mrcfile

    volumes = np.asarray(volumes)
    if volumes.ndim == 3:
        volumes = volumes[None]
    if volumes.ndim != 4:
        raise KtalError(f"layer '{name}' has {volumes.ndim} dimensions; use a volume (z, y, x) "
                        "or a stack of volumes (n, z, y, x)")
    if not volumes.shape[1] == volumes.shape[2] == volumes.shape[3]:
        z, y, x = volumes.shape[1:]
        raise KtalError(f"layer '{name}': volumes are {z}x{y}x{x} (z, y, x); subtomograms must be cubic")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "layer"
    with tempfile.TemporaryDirectory(prefix="ktal-layer-") as tmp:
        path = Path(tmp) / f"{safe}.mrcs"
        with mrcfile.new(path) as mrc:
            mrc.set_data(volumes.astype(np.float32, copy=False))  # 4D: a volume stack, ispg 401
            mrc.voxel_size = float(voxel_size)
        return create_project(root, path, recipe_name, classes, on_progress, should_stop)


def train_cycle(root: str | Path, device_name: str, seed: int, threads: int | None = None,
                on_progress: ProgressCallback | None = None, should_stop: StopFlag | None = None):
    """One active-learning cycle on the project's labels, as ``ktal-cryo train`` runs it.

    ``threads``: torch's intra-op threads for this job (set in the worker thread itself).
    """
    import torch

    from ..core.engine.device import resolve_device
    from ..core.loop import cycle as al
    from ..core.project.project import Project

    if threads:
        torch.set_num_threads(threads)
    project = Project(root)
    recipe = project.recipe()
    # Unlike the CLI, learning_curve.png is not drawn here: matplotlib's Agg renderer holds
    # the GIL for ~0.3 s and would stall the GUI; the dock has its own plot.
    return al.train_cycle(project, recipe, resolve_device(device_name), seed,
                          on_progress=on_progress, should_stop=should_stop)


def export_predictions(root: str | Path, out: str | Path, device_name: str,
                       on_progress: ProgressCallback | None = None,
                       should_stop: StopFlag | None = None) -> ExportResult:
    """Labels and the latest teacher's predictions for the whole pool, as ``ktal-cryo predict``."""
    from ..core.engine.device import resolve_device
    from ..core.loop.export import write_predictions
    from ..core.project.project import Project

    return write_predictions(Project(root), out, resolve_device(device_name), on_progress, should_stop)
