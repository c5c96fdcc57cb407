"""napari-ktal: knowledge-transfer active learning for cryo-ET subtomograms.

The compute core lives in :mod:`napari_ktal.core` (numpy + torch, no Qt). Two thin shells
drive it: the ``ktal-cryo`` command line (:mod:`napari_ktal.cli`) and the napari plugin
(:mod:`napari_ktal._napari`). From a notebook, the same engine::

    import napari_ktal as ktal

    ktal.simulate_dataset("data", ktal.SimulationConfig(classes=4, per_class=150, test_per_class=50, snr=1))
    project, _ = ktal.open_or_create("project", "data/train", recipe=ktal.load_recipe("quick"))
    oracle = ktal.oracle_for_pool(project.pool, "data/train/labels.csv")
    test = ktal.load_labeled_set("data/test/labels.csv", sorted(set(oracle.values())))
    for report in ktal.run_with_oracle(project, ktal.load_recipe("quick"), oracle, ktal.resolve_device(), test=test):
        print(report.cycle, report.n_labeled, report.test_accuracy)

Names are loaded on first use, so ``import napari_ktal`` (which napari does to find the
plugin) stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "Project": "napari_ktal.core.project",
    "QueryItem": "napari_ktal.core.project",
    "Recipe": "napari_ktal.core.recipe",
    "load_recipe": "napari_ktal.core.loop",
    "open_or_create": "napari_ktal.core.loop",
    "prepare_training": "napari_ktal.core.loop",
    "train": "napari_ktal.core.loop",
    "train_cycle": "napari_ktal.core.loop",
    "initial_query": "napari_ktal.core.loop",
    "run_with_oracle": "napari_ktal.core.loop",
    "oracle_for_pool": "napari_ktal.core.loop",
    "load_labeled_set": "napari_ktal.core.loop",
    "import_labels": "napari_ktal.core.loop",
    "write_predictions": "napari_ktal.core.loop",
    "PickSource": "napari_ktal.core.loop",
    "extract": "napari_ktal.core.loop",
    "export_labels": "napari_ktal.core.loop",
    "PickOptions": "napari_ktal.core.data",
    "read_picks": "napari_ktal.core.data",
    "plan_extraction": "napari_ktal.core.data",
    "LabelingSession": "napari_ktal.core.loop",
    "CycleReport": "napari_ktal.core.loop",
    "STRATEGIES": "napari_ktal.core.strategies",
    "resolve_device": "napari_ktal.core.engine",
    "SimulationConfig": "napari_ktal.core.simulate",
    "simulate_dataset": "napari_ktal.core.simulate",
    "SceneConfig": "napari_ktal.core.simulate",
    "write_scene": "napari_ktal.core.simulate",
    "KtalError": "napari_ktal.core.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_ktal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
