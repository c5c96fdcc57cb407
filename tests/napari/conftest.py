"""Fixtures of the napari tests that open the dock in a real viewer."""

import pytest


@pytest.fixture
def make_widget(make_napari_viewer, qtbot):
    """A viewer (shown, 1280x800) with the widget docked; closed by make_napari_viewer."""
    from napari_ktal._napari._qt.widget import ActiveLearningWidget

    made = []

    def make():
        viewer = make_napari_viewer(show=True)
        viewer.window._qt_window.resize(1280, 800)
        widget = ActiveLearningWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Active learning", area="right")
        made.append(widget)
        return viewer, widget

    yield make
    for widget in made:
        widget.teardown()  # stop workers before the viewers go
