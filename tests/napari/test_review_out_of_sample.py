"""The review tab judges labels out of sample: a wrong label given on purpose comes first after the next
cycle, with the out-of-sample probability of that label (3 significant digits) and the class it should
have; until the labels are judged the tab says so. The controller runs on the serial runner; the tab
is the real Qt view over the controller's browser (run under ``xvfb-run -a``)."""

from __future__ import annotations

import pytest
import torch
from easy_volumes import CLASSES, easy_recipe, write_stack
from qtpy.QtCore import Qt

from napari_ktal._napari.browser import JUDGING, REVIEW
from napari_ktal._napari.controller import TRAIN, Controller
from napari_ktal._napari.runner import SerialRunner
from napari_ktal.core import loop as al
from napari_ktal.core.loop import Phase
from napari_ktal.core.project import Project

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

N, LABELED = 48, 40


@pytest.fixture
def easy_project(tmp_path):
    """48 easy volumes; 40 labeled right and cycle 0 trained on them, so batch 1 waits to be labeled."""
    truth = write_stack(tmp_path / "data" / "easy.mrcs", N)
    recipe = easy_recipe()  # with the audit slice: the planted mistake may be an audit volume
    project = Project.create(tmp_path / "project", tmp_path / "data" / "easy.mrcs", recipe, CLASSES)
    batch = al.initial_query(project, recipe, seed=0)
    first = [q.index for q in batch] + [i for i in range(N) if i not in {q.index for q in batch}]
    project.label_many({i: CLASSES[truth[i]] for i in first[:LABELED]}, cycle=0)
    al.train_cycle(project, recipe, torch.device("cpu"), seed=0)
    return project, truth


def test_a_wrong_label_given_on_purpose_is_listed_first_after_the_next_cycle(easy_project, qtbot):
    from napari_ktal._napari._qt.review import COLUMNS, ReviewView

    project, truth = easy_project
    runner = SerialRunner()
    controller = Controller(runner, devices=["auto", "cpu"])
    controller.device = "cpu"
    judged = []
    controller.events.review_changed.connect(lambda: judged.append(controller.browser.review_state()))
    s = controller.open_project(project.root)
    view = ReviewView()
    view.source, view.session = controller.browser, s
    view.set_classes(s.classes)
    controller.events.review_changed.connect(view.changed)
    qtbot.addWidget(view)
    view.show()
    try:
        runner.run()  # thumbnails, the teacher, the labels of cycle 0 judged out of sample
        runner.run()
        runner.run()
        assert controller.browser.judged_now is not None
        qtbot.waitUntil(lambda: view.model.rows and view.model.rows[0].judged, timeout=5_000)  # the tab follows
        # the batch of cycle 1, one volume labeled wrongly on purpose: class A given class B
        wrong = s.batch[0].index  # (an audit volume or not: the expert cannot tell, nor does the review care)
        given = CLASSES[(truth[wrong] + 2) % 4]
        while s.phase is Phase.LABELING:
            i = s.item.index
            controller.assign(given if i == wrong else CLASSES[truth[i]])
        assert runner.running(TRAIN) is not None  # the batch is done: cycle 1 trains
        view.refresh()
        assert "judged again after the next cycle" in view.judging.text()  # stale: not judged yet
        assert not any(r.judged for r in view.model.rows)  # meanwhile ordered as before, by the teacher
        runner.run()  # cycle 1 trains; then the batch's thumbnails, the teacher's opinion
        runner.run()
        runner.run()
        assert runner.running(REVIEW) is not None and controller.browser.review_state() == JUDGING
        view.refresh()
        assert view.judging.text() == JUDGING
        runner.run()  # the labels judged out of sample
        assert judged[-1].startswith("judged out of sample") and "after cycle 1" in judged[-1]
        view.refresh()
        first = view.model.rows[0]
        assert (first.index, first.label, first.suspect) == (wrong, given, True), \
            [(r.index, r.label, round(r.score, 3)) for r in view.model.rows[:5]]
        shown = {c: view.model.data(view.model.index(0, k), Qt.ItemDataRole.DisplayRole)
                 for k, c in enumerate(COLUMNS)}
        assert shown["suggested"] == CLASSES[truth[wrong]]
        assert shown["p(label) out of sample"] == f"{first.p_out:.3g}" and first.p_out < 0.5
        assert "likely mistakes" in view.count.text()
    finally:
        controller.close_project()


def test_training_stops_judging_the_labels(easy_project):
    project, truth = easy_project
    runner = SerialRunner()
    controller = Controller(runner, devices=["auto", "cpu"])
    controller.device = "cpu"
    s = controller.open_project(project.root)
    try:
        runner.run()
        runner.run()
        assert runner.running(REVIEW) is not None  # waiting to judge the labels of cycle 0
        while s.phase is Phase.LABELING:
            controller.assign(CLASSES[truth[s.item.index]])
        assert runner.running(TRAIN) is not None and runner.running(REVIEW) is None  # training goes first
        assert controller.browser.review_state() != JUDGING
    finally:
        controller.close_project()
