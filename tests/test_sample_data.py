"""The shipped example data: readable, labeled, and reproducible from its recorded command."""

import json
from pathlib import Path

from napari_ktal.core.data.mrc import find_volumes, read_labels_csv
from napari_ktal.core.simulate import SimulationConfig, simulate_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def test_sample_data_is_labeled_subtomograms():
    refs = find_volumes(SAMPLE)
    assert len(refs) == 12
    labels = read_labels_csv(SAMPLE / "labels.csv")
    assert {r for r, _ in labels} == set(refs)
    assert sorted({lab for _, lab in labels}) == ["class_00", "class_01", "class_02", "class_03"]


def test_sample_data_is_reproduced_by_the_simulator(tmp_path):
    cfg = SimulationConfig(**json.loads((SAMPLE / "simulation.json").read_text()))
    simulate_dataset(tmp_path, cfg)
    for f in (tmp_path / "train").iterdir():
        assert (SAMPLE / f.name).read_bytes() == f.read_bytes(), f.name
