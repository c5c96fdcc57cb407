"""npe2 sample data: a few simulated subtomograms of known classes, made on the fly.

The volumes come from :mod:`napari_ktal.core.simulate.dataset` (the simulator behind
``ktal-cryo simulate``): procedural macromolecule-like templates under random rotations,
CTF, missing wedge and noise. The sample is deterministic and small enough to appear in
about a second; it is meant for a first look at the plugin, not for training.
"""

from __future__ import annotations

import numpy as np

from ..core.simulate import SimulationConfig, class_name, make_templates, simulate_volume

N_CLASSES = 4
PER_CLASS = 3
SNR = 1.0
SEED = 0


def simulated_subtomograms() -> list[tuple[np.ndarray, dict, str]]:
    """4 classes x 3 subtomograms (32^3, SNR 1) as one 4D stack, ordered by class.

    ``metadata["classes"]`` names the classes; ``metadata["labels"]`` gives each volume's class.
    """
    config = SimulationConfig(classes=N_CLASSES, per_class=PER_CLASS, snr=SNR, seed=SEED)
    template_seed, volume_seed = np.random.SeedSequence(config.seed).spawn(2)
    templates = make_templates(config.classes, config.box, np.random.default_rng(template_seed))
    rngs = [np.random.default_rng(s) for s in volume_seed.spawn(N_CLASSES * PER_CLASS)]
    labels = [class_name(k // PER_CLASS, N_CLASSES) for k in range(N_CLASSES * PER_CLASS)]
    volumes = np.stack([simulate_volume(templates[k // PER_CLASS], rng, config) for k, rng in enumerate(rngs)])
    lo, hi = np.percentile(volumes, [1.0, 99.9])
    metadata = {"classes": [class_name(c, N_CLASSES) for c in range(N_CLASSES)], "labels": labels,
                "simulation": {"snr": SNR, "seed": SEED, "box": config.box, "voxel_size": config.voxel_size}}
    # raw cryo-ET contrast, as off a tomogram: protein is dark, so the 3D view is a *minimum*
    # intensity projection (a maximum projection of this data shows only noise)
    kwargs = {"name": "simulated subtomograms", "scale": (1.0, *(config.voxel_size,) * 3),
              "contrast_limits": (float(lo), float(hi)), "rendering": "minip", "metadata": metadata,
              "units": "angstrom"}
    return [(volumes, kwargs, "image")]
