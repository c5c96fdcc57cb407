"""The second page of the dock, shown while a project is open: the widgets, no logic.

:class:`SessionPanel` lays out what the user sees and exposes its buttons; the dock widget
connects them to the session and fills the panel from it with :meth:`SessionPanel.show_state`.
Buttons take no keyboard focus, so the number keys keep reaching the napari canvas after a
click.
"""

from __future__ import annotations

import math

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.loop.session import LabelingSession, Phase, key_of_class, shown_score
from ...core.project import JUNK_CLASS
from ..palette import class_color
from ..viewer_bindings import KEYS
from ..volume_view import MODES as VIEW_MODES
from ..volume_view import VolumeView
from .common import swatch
from .elided import ElidedButton, ElidedLabel
from .fields import DeviceCombo, RecipeCombo, shrinkable
from .plot import CyclePlot

#: why a batch with an audit share shows no uncertainty (the row itself is too narrow to say it)
AUDIT_TIP = ("A random audit share is mixed into this batch to estimate how accurate the classes are. "
             "No score is shown, so that the random volumes cannot be told apart and get the same care.")


def _button(text: str, parent: QWidget, tip: str = "", kind: type[QPushButton] = QPushButton) -> QPushButton:
    b = kind(text, parent)
    b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    if tip:
        b.setToolTip(tip)
    return b


def _fmt_score(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.3g}"


class ProgressBar(QProgressBar):
    """A progress bar that repaints with the next frame, not at once, and elides its text.

    QProgressBar.setValue repaints synchronously; in a napari window (an OpenGL canvas in
    it) each repaint composes the whole window, 20-40 ms without a GPU. Updates are
    coalesced with everything else that changes in the same event-loop turn. A text longer
    than the bar ("cycle 3: epoch 5/30 · loss 0.412 · ~1 min 20 s left") is elided, and whole
    in the tooltip.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._text = ""

    def setValue(self, value: int) -> None:  # noqa: N802 - Qt's name
        self.show_progress(self._text, value, self.maximum())

    def show_progress(self, text: str, done: int, total: int) -> None:
        """Range, value and text at once, painted with the next frame."""
        self.setUpdatesEnabled(False)
        try:
            self.setRange(0, total)
            super().setValue(done)
            self._text = text
            self._elide()
        finally:
            self.setUpdatesEnabled(True)
        self.update()

    def full_text(self) -> str:
        return self._text

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        room = self.contentsRect().width() - 2 * self.fontMetrics().averageCharWidth()  # the style's text margins
        shown = self.fontMetrics().elidedText(self._text, Qt.TextElideMode.ElideRight, max(room, 0))
        self.setFormat(shown.replace("%", "%%"))  # a literal '%', not one of Qt's %p %v %m
        self.setToolTip(self._text if shown != self._text else "")


class SessionPanel(QWidget):
    assignRequested = Signal(str)  # class name
    renameRequested = Signal(str, str)  # old, new
    removeRequested = Signal(str)
    addClassRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None, theme: dict | None = None):
        super().__init__(parent)
        self._header()
        vol_box = self._volume_box()
        self._class_box()
        train_box = self._training_box()
        self._tabs(theme)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.title, self.summary, self.status, vol_box, self.class_box, train_box, self.tabs):
            layout.addWidget(w)
        layout.addStretch(1)

    # -- building: one method per part of the page ----------------------------------------------
    def _header(self) -> None:
        """The project and cycle in bold, the batch and the pool; the status line."""
        self.title = ElidedLabel("", self, Qt.TextElideMode.ElideMiddle)  # a folder name has no spaces to wrap at
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.summary = QLabel(self)  # the batch and the pool
        self.summary.setWordWrap(True)
        # what just happened (training, an undo, a key with no class): near the top, where a
        # 1280 x 800 screen shows it without scrolling the dock
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        # room for two lines, so a longer message does not reflow the dock (and redraw the plot)
        self.status.setMinimumHeight(2 * self.status.fontMetrics().lineSpacing())

    def _volume_box(self) -> QGroupBox:
        """The current volume: where it is in the batch, its name, score, the teacher's guess, its label."""
        vol_box = QGroupBox("Volume", self)
        self.position = QLabel(vol_box)
        self.position.setStyleSheet("font-size: 16pt; font-weight: bold;")
        self.key = ElidedLabel("", vol_box, Qt.TextElideMode.ElideMiddle)  # keeps a file's number and extension
        self.key.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.key.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.score = ElidedLabel("", vol_box, Qt.TextElideMode.ElideRight)
        self.teacher = ElidedLabel("", vol_box, Qt.TextElideMode.ElideRight)
        self.label = ElidedLabel("", vol_box, Qt.TextElideMode.ElideRight)
        self.previous_button = _button("◀ Prev", vol_box, f"Previous volume of the batch ({KEYS['previous']})")
        self.skip_button = _button("Skip", vol_box, f"Leave this volume unlabeled and go on ({KEYS['skip']})")
        self.undo_button = _button("Undo", vol_box, f"Undo the last label or skip ({KEYS['undo']})")
        self.next_button = _button("Next ▶", vol_box, f"Next volume of the batch ({KEYS['next']})")
        nav = QHBoxLayout()
        for b in (self.previous_button, self.skip_button, self.undo_button, self.next_button):
            nav.addWidget(b)
        top = QHBoxLayout()
        top.addWidget(self.position)
        top.addWidget(self.key, 1)
        facts = QFormLayout()
        facts.addRow("Uncertainty", self.score)
        facts.addRow("Teacher says", self.teacher)
        facts.addRow("Your label", self.label)
        self.legend = QLabel(VolumeView.legend["panels"], vol_box)
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("color: gray;")
        vol_layout = QVBoxLayout(vol_box)
        vol_layout.addLayout(top)
        vol_layout.addLayout(facts)
        vol_layout.addLayout(nav)
        vol_layout.addWidget(self.legend)
        return vol_box

    def _class_box(self) -> None:
        """The class buttons (filled by :meth:`set_classes`) and the buttons that add classes."""
        self.class_box = QGroupBox("Classes: press a key (viewer or gallery)", self)
        self.class_grid = QGridLayout()
        self.class_buttons: list[QPushButton] = []
        self.add_class_button = _button("Add class…", self.class_box)
        self.add_junk_button = _button(f"+ {JUNK_CLASS}", self.class_box,
                                       "Add a class for volumes that are not a particle (empty, ice, carbon, ...)")
        self.add_class_button.clicked.connect(self._ask_add_class)
        class_tools = QHBoxLayout()
        class_tools.addWidget(self.add_class_button)
        class_tools.addWidget(self.add_junk_button)
        self.class_box.setToolTip("Click a class, or press its key (1-9, 0, then letters) with the mouse over the\n"
                                  "viewer. Right-click a class to rename or remove it.")
        class_layout = QVBoxLayout(self.class_box)
        class_layout.addLayout(self.class_grid)
        class_layout.addLayout(class_tools)

    def _training_box(self) -> QGroupBox:
        """Auto-train, the progress bar, Train now and Cancel."""
        train_box = QGroupBox("Training", self)
        self.auto_train = QCheckBox("Auto-train when the batch is done", train_box)
        self.auto_train.setToolTip("Start the next cycle by itself as soon as every volume of the batch is labeled "
                                   "or skipped")
        self.auto_train.setChecked(True)
        self.auto_train.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.progress = ProgressBar(train_box)
        self.progress.setTextVisible(True)
        self.progress.show_progress("idle", 0, 1)
        self.train_button = _button("Train now", train_box, "Train a cycle on the current labels")
        self.cancel_button = _button("Cancel", train_box, "Stop training; nothing of the cycle is kept")
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        train_layout = QVBoxLayout(train_box)
        train_layout.addWidget(self.auto_train)
        train_layout.addWidget(self.progress)  # a row of its own: room for "epoch 5/30 · ~1 min left"
        train_layout.addLayout(buttons)
        return train_box

    def _tabs(self, theme: dict | None) -> None:
        """The per-cycle plot and the project's settings, as tabs."""
        self.tabs = QTabWidget(self)
        self.plot = CyclePlot(theme, self.tabs)
        self.tabs.addTab(self.plot, "Cycles")
        self.tabs.addTab(self._settings_tab(), "Project")

    def _settings_tab(self) -> QWidget:
        """Recipe, device, how volumes are shown, and the project's buttons."""
        settings = QWidget(self.tabs)
        self.recipe = RecipeCombo(settings)
        self.device = DeviceCombo(settings)
        self.smoothing = QDoubleSpinBox(settings)
        self.smoothing.setRange(0.0, 4.0)
        self.smoothing.setSingleStep(0.25)
        self.smoothing.setValue(1.0)
        self.smoothing.setSuffix(" voxel")
        self.smoothing.setToolTip("Gaussian smoothing of the displayed volume (0: raw); labels are not affected")
        self.invert = QCheckBox("Invert contrast (protein bright)", settings)
        self.invert.setChecked(True)
        self.view_mode = QComboBox(settings)
        shrinkable(self.view_mode)
        for key, text in VIEW_MODES.items():
            self.view_mode.addItem(text, key)
        self.view_mode.setToolTip("Projection + slices draw fast everywhere; the 3D volume can be rotated but\n"
                                  "costs ~10x more per frame without a GPU")
        self.canvas_text = QCheckBox("Describe the volume on the canvas", settings)
        self.canvas_text.setToolTip("Position, key, teacher and label as text over the volume (the dock and the\n"
                                    "gallery show them anyway). Off by default: without a GPU each frame with new\n"
                                    "text takes ~100 ms longer to draw.")
        self.view_mode.currentIndexChanged.connect(
            lambda _: self.legend.setText(VolumeView.legend[self.view_mode.currentData()]))
        self.browser_button = _button("Show the gallery and review dock", settings,
                                      "The batch as thumbnails, every label for review, examples of each class")
        self.export_button = _button("Export labels + predictions…", settings,
                                     "CSV of every pool volume: index, key, label, predicted, confidence")
        self.close_button = _button("Close project", settings)
        form = QFormLayout(settings)
        form.addRow("Recipe", self.recipe)
        form.addRow("Device", self.device)
        form.addRow("View", self.view_mode)
        form.addRow("Smoothing", self.smoothing)
        form.addRow(self.invert)  # a row's whole width: a form's label column would cost the text its room
        form.addRow(self.canvas_text)
        form.addRow(self.browser_button)
        form.addRow(self.export_button)
        form.addRow(self.close_button)
        return settings


    # -- classes -------------------------------------------------------------------------
    def set_classes(self, classes: list[str]) -> None:
        """Rebuild the class buttons: "1  name", ..., "0  name", "Q  name", ..., in the class's colour."""
        for b in self.class_buttons:
            self.class_grid.removeWidget(b)
            b.hide()  # gone from the dock now, not when Qt gets round to deleting it
            b.deleteLater()
        self.class_buttons = []
        for k, name in enumerate(classes):
            key = key_of_class(k)
            tip = f"Label the volume '{name}'" + (f" (key {key})" if key else "")
            b = _button(f"{key}  {name}" if key else name, self.class_box, tip + ". Right-click to rename or remove.",
                        ElidedButton)
            b.setIcon(swatch(class_color(k)))
            b.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            b.clicked.connect(lambda _=False, n=name: self.assignRequested.emit(n))
            b.customContextMenuRequested.connect(lambda pos, n=name, btn=b: self._class_menu(n, btn, pos))
            self.class_grid.addWidget(b, k // 2, k % 2)
            self.class_buttons.append(b)
        self.add_junk_button.setVisible(JUNK_CLASS not in classes)

    def _class_menu(self, name: str, button: QPushButton, pos) -> None:
        menu = QMenu(self)
        rename = menu.addAction(f"Rename '{name}'…")
        remove = menu.addAction(f"Remove '{name}'")
        chosen = menu.exec(button.mapToGlobal(pos))
        if chosen is rename:
            new, ok = QInputDialog.getText(self, "Rename class", f"New name for '{name}':", text=name)
            if ok and new.strip() and new.strip() != name:
                self.renameRequested.emit(name, new.strip())
        elif chosen is remove:
            self.removeRequested.emit(name)

    def _ask_add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name (e.g. ribosome):")
        if ok and name.strip():
            self.addClassRequested.emit(name.strip())

    # -- state ---------------------------------------------------------------------------
    def _set_label_text(self, text: str, given: bool) -> None:
        """The label in bold, or what stands for none in italics (a font, not rich text: it is elided)."""
        font = self.label.font()
        if font.bold() != given or font.italic() == given:
            font.setBold(given)
            font.setItalic(not given)
            self.label.setFont(font)
        self.label.setText(text)

    def show_state(self, session: LabelingSession, training: bool, guess=None) -> None:
        """Fill every label from the session (cheap: called after each key press).

        ``guess(index)``: the teacher's (class, probability) of a visited volume, or None.
        """
        n_labeled, n_pool, final = session.budget()
        phase = session.phase
        todo = {Phase.LABELING: f"{session.n_open} to label",
                Phase.READY: "batch done",
                Phase.DONE: "no further batch: the pool is used up"}[phase]
        kind = "random picks" if session.cycle == 0 else "most uncertain"
        skipped = f", {session.n_skipped_in_batch} skipped" if session.n_skipped_in_batch else ""
        self.title.setText(f"{session.project.root.name} · cycle {session.cycle}")
        self.title.setToolTip(str(session.project.root))
        self.summary.setText(
            f"batch ({kind}): {session.n_labeled_in_batch}/{len(session)} labeled{skipped}, {todo}\n"
            f"pool: {n_labeled}/{n_pool} labeled ({100 * n_labeled / max(n_pool, 1):.0f}%), budget {final}"
        )
        item = session.item
        index = session.current_index
        self.score.setToolTip("")
        if index is None:
            for w in (self.position, self.key, self.score, self.teacher, self.label):
                w.setText("—")
        elif session.visiting is not None:
            g = guess(index) if guess is not None else None
            self.position.setText("review")
            self.key.setText(session.project.pool.keys[index])
            self.key.setToolTip(f"pool index {index}")
            self.score.setText("not in this batch (N: back to the batch)")
            self.teacher.setText(f"{g[0]}  ({100 * g[1]:.0f}%)" if g else "—")
        else:
            self.position.setText(f"{session.position + 1} / {len(session)}")
            self.key.setText(item.key)
            self.key.setToolTip(f"pool index {item.index}")
            score = shown_score(item, session.batch)
            self.score.setText("hidden in an audited batch" if score is None else
                               "random pick" if math.isnan(score) else
                               f"{_fmt_score(score)}   (rank {item.rank + 1} in the batch)")
            if score is None:
                self.score.setToolTip(AUDIT_TIP)
            self.teacher.setText(f"{item.predicted}  ({100 * item.confidence:.0f}%)" if item.predicted else "—")
        if index is not None:
            label = session.label_of(index)
            self._set_label_text(label if label is not None else "skipped" if session.is_skipped(index)
                                 else "not labeled yet", given=label is not None)
        for b, name in zip(self.class_buttons, session.classes):
            style = "font-weight: bold; border: 2px solid #6a9fd8;" if (
                index is not None and session.label_of(index) == name) else ""
            if b.styleSheet() != style:  # a new style sheet re-polishes the button: only when it changes
                b.setStyleSheet(style)
        self.undo_button.setEnabled(session.can_undo)
        self.train_button.setEnabled(not training)
        self.cancel_button.setEnabled(training)
