"""The second dock, below the canvas while a project is open: the batch gallery, the review
table and the per-class examples, as tabs.

Views only: what they show comes from the controller's browser and session, news of a change
from the controller's signals (connected here), what the user does goes to the Active learning
widget's actions (so a key in the gallery and a key in the
viewer do the same). In a viewer without a window (a ``ViewerModel``, in tests) the panel is
a plain widget, not docked.
"""

from __future__ import annotations

import contextlib

from qtpy.QtWidgets import QSizePolicy, QTabWidget

from .examples import ExamplesView
from .gallery import GalleryView
from .review import ReviewView

DOCK_NAME = "Batch gallery and review"


class BrowserPanel(QTabWidget):
    def __init__(self, widget, parent=None):
        """``widget``: the :class:`~.widget.ActiveLearningWidget` whose actions the views call."""
        super().__init__(parent)
        self.w = widget
        self.gallery = GalleryView(self)
        self.review = ReviewView(self)
        self.examples = ExamplesView(self)
        self.addTab(self.gallery, "Batch gallery")
        self.addTab(self.review, "Review labels")
        self.addTab(self.examples, "Class examples")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._docked = False
        browser = widget.controller.browser
        self.gallery.thumbnail = browser.thumbnail
        self.review.source = browser
        self.examples.source = browser
        self._connect()

    def _connect(self) -> None:
        w, c = self.w, self.w.controller
        g = self.gallery
        g.goToRequested.connect(w.go_to)
        g.assignRequested.connect(w.assign_to)
        g.classKeyPressed.connect(w.assign_key_to)
        g.actionRequested.connect(lambda name: getattr(w, name)())
        g.modeChosen.connect(lambda mode: c.browser.set_settings(mode=mode))
        self.review.relabelRequested.connect(w.assign_to)
        self.review.classKeyPressed.connect(w.assign_key_to)
        self.review.unlabelRequested.connect(w.unlabel_many)
        self.review.visitRequested.connect(w.visit)
        self.review.undoRequested.connect(w.undo)
        self.examples.visitRequested.connect(w.visit)
        events = c.events
        events.batch_changed.connect(self.batch_changed)
        events.labels_changed.connect(self.labels_changed)
        events.classes_changed.connect(self.classes_changed)
        events.thumbnails_ready.connect(self.thumbnails_ready)
        events.teacher_changed.connect(self.teacher_changed)
        events.review_changed.connect(self.review_changed)

    # -- docking --------------------------------------------------------------------------------------
    def dock(self) -> None:
        """Dock below the canvas (again, if the user closed it)."""
        window = getattr(self.w.viewer, "window", None)
        if window is None or self._docked and self.parent() is not None:
            return
        window.add_dock_widget(self, name=DOCK_NAME, area="bottom", add_vertical_stretch=False)
        self._docked = True

    def undock(self) -> None:
        window = getattr(self.w.viewer, "window", None)
        if window is not None and self._docked:
            with contextlib.suppress(LookupError, RuntimeError, AttributeError):
                window.remove_dock_widget(self)
        self._docked = False

    # -- news from the controller (its signals) and the widget ------------------------------------------
    def set_session(self, session) -> None:
        for view in (self.gallery, self.review, self.examples):
            view.session = session
        if session is not None:
            self.review.set_classes(session.classes)
        self.batch_changed()

    def batch_changed(self) -> None:
        s = self.w.session
        self.gallery.clear_pixmaps()
        self.gallery.set_batch(s)
        self.labels_changed()

    def show_state(self) -> None:
        self.gallery.refresh_state(self.w.session)

    def labels_changed(self) -> None:
        self.review.changed()
        self.examples.changed()

    def classes_changed(self) -> None:
        s = self.w.session
        if s is not None:
            self.gallery.classes_changed(s)
            self.review.set_classes(s.classes)
            self.examples.changed()

    def thumbnails_ready(self, indices: list[int]) -> None:
        self.gallery.thumbnails_ready(indices)
        self.examples.thumbnails_ready(indices)

    def teacher_changed(self) -> None:
        self.review.changed()
        self.examples.changed()

    def review_changed(self) -> None:
        """The labels' out-of-sample judgement started, ended or stopped: the review's order and its line."""
        self.review.changed()
