"""A data set a tiny network learns on a CPU in seconds (simulated tiny pools are not learnable on
that budget): four classes, a central cube of brightness -3, -1, 1 or 3 in unit noise (flips, the
training's augmentation, leave the class unchanged). Shared by the tests that need labels a
teacher can judge: planted mistakes must stand out."""

from pathlib import Path

import mrcfile
import numpy as np

CLASSES = ["dark", "dim", "bright", "brighter"]


def easy_volumes(n: int, box: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(volumes (n, box, box, box) float32, classes (n,)): class ``i % 4`` for volume ``i``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.standard_normal((n, box, box, box)).astype(np.float32)
    q = box // 4
    x[:, q:-q, q:-q, q:-q] += np.array([-3.0, -1.0, 1.0, 3.0], np.float32)[y][:, None, None, None]
    return x, y


def write_stack(path: Path, n: int, box: int = 16, seed: int = 0) -> np.ndarray:
    """``path``: an MRC stack of :func:`easy_volumes` (keys ``k@name.mrcs``); returns the classes."""
    x, y = easy_volumes(n, box, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path) as mrc:
        mrc.set_data(x)
    return y


def easy_recipe():
    """The quick recipe at width 4, 8 epochs of lr 0.1: a teacher learns the easy set in seconds."""
    from napari_ktal.core.loop import load_recipe

    return load_recipe("quick").replace(model={"width": 4}, train={
        "min_steps": 0, "epochs": 8, "lr": 0.1, "lr_milestones": [], "batch_size": 8, "recalibrate_bn": True})
