"""The first page of the dock: open a project folder, or create one from subtomograms.

The subtomograms can be a folder of MRC files, one MRC (stack) file, a labels CSV, or an
Image layer already open in napari (a volume or a stack of volumes). The device the cycles
train on is chosen above both (it is the same choice as the Project tab's). The form only
collects the choices; the widget does the work (in a worker) and reports problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .fields import ClassListEditor, DeviceCombo, PathField, RecipeCombo, shrinkable

FROM_FOLDER = "Folder of MRC files"
FROM_FILE = "MRC stack file or labels CSV"
FROM_PICKS = "Particle list + tomograms"


@dataclass(frozen=True)
class NewProject:
    root: str
    source: str | None  # a path, or None when the volumes come from a layer
    layer: object | None  # a napari Image layer
    classes: list[str]
    recipe: str
    tomograms: str | None = None  # with a particle list: a folder of tomograms or a tomograms.star


class SetupPanel(QWidget):
    openRequested = Signal(str)
    createRequested = Signal(object)  # NewProject

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer

        open_box = QGroupBox("Continue a project", self)
        open_button = QPushButton("Open project folder…", open_box)
        open_button.setToolTip("A folder made by napari-ktal or `ktal-cryo train --project`")
        open_button.clicked.connect(self._ask_open)
        QVBoxLayout(open_box).addWidget(open_button)

        new_box = QGroupBox("Start a new project", self)
        self.source_kind = QComboBox(new_box)
        shrinkable(self.source_kind)
        self.source_kind.setToolTip("Where the subtomograms come from: files, or an Image layer\n"
                                    "holding one volume (z, y, x) or a stack (n, z, y, x)")
        self.source_path = PathField("folder with .mrc files", "Choose the folder of subtomograms")
        self.tomograms_path = PathField("folder of tomograms, or tomograms.star", "Choose the tomograms")
        self.project_path = PathField("a new or empty folder", "Choose a new or empty project folder")
        self.classes = ClassListEditor(new_box)
        self.recipe = RecipeCombo(new_box)
        self.create_button = QPushButton("Create project", new_box)
        self.create_button.clicked.connect(self._request_create)
        form = QFormLayout(new_box)
        form.addRow("Subtomograms", self.source_kind)
        form.addRow("", self.source_path)
        form.addRow("", self.tomograms_path)
        form.addRow("Project folder", self.project_path)
        form.addRow("Classes", self.classes)
        form.addRow("Recipe", self.recipe)
        form.addRow(self.create_button)

        hint = QLabel("Label the volumes the models are least sure of: after each batch, a teacher and "
                      "a student network are trained, and their disagreement picks the next batch.", self)
        hint.setWordWrap(True)
        self.device = DeviceCombo(self)
        self.device.setToolTip(self.device.toolTip() + "\nFor the project you open or create here; the Project "
                               "tab changes it later.")
        device_row = QFormLayout()
        device_row.addRow("Train on", self.device)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(hint)
        layout.addLayout(device_row)
        layout.addWidget(open_box)
        layout.addWidget(new_box)
        layout.addStretch(1)

        self.source_kind.currentIndexChanged.connect(self._on_source_kind)

    # -- sources -----------------------------------------------------------------------
    def _candidate_layers(self) -> list:
        from napari.layers import Image

        from ..volume_view import VIEW_TAG

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.ndim in (3, 4) and not layer.rgb
                and VIEW_TAG not in layer.metadata]

    def _refresh_layers(self, event=None) -> None:
        current = self.source_kind.currentText()
        self.source_kind.blockSignals(True)
        self.source_kind.clear()
        self.source_kind.addItem(FROM_FOLDER, None)
        self.source_kind.addItem(FROM_FILE, None)
        self.source_kind.addItem(FROM_PICKS, None)
        for layer in self._candidate_layers():
            self.source_kind.addItem(f"layer: {layer.name}", layer)
        found = self.source_kind.findText(current)
        self.source_kind.setCurrentIndex(max(found, 0))
        self.source_kind.blockSignals(False)
        self._on_source_kind()

    def select_layer(self, layer) -> None:
        index = self.source_kind.findData(layer)
        if index >= 0:
            self.source_kind.setCurrentIndex(index)

    def _on_source_kind(self, index: int | None = None) -> None:
        layer = self.source_kind.currentData()
        self.source_path.setVisible(layer is None)
        picks = self.source_kind.currentText() == FROM_PICKS
        self.tomograms_path.setVisible(picks)
        if picks:
            self.source_path.set_mode(False, "Particle lists (*.star *.tbl *.json *.csv)")
            self.source_path.edit.setPlaceholderText("picks: RELION/Warp .star, Dynamo .tbl, copick .json, CSV")
        elif self.source_kind.currentText() == FROM_FILE:
            self.source_path.set_mode(False, "Subtomograms (*.mrc *.mrcs *.map *.rec *.csv)")
            self.source_path.edit.setPlaceholderText("a .mrcs stack, or a labels CSV (path,label)")
        else:
            self.source_path.set_mode(True)
            self.source_path.edit.setPlaceholderText("folder with .mrc files")
        if layer is not None and not self.classes.classes():
            self.classes.set_classes(list(layer.metadata.get("classes", [])))

    # -- requests ----------------------------------------------------------------------
    def _ask_open(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a napari-ktal project folder")
        if path:
            self.openRequested.emit(path)

    def new_project(self) -> NewProject:
        layer = self.source_kind.currentData()
        source = None if layer is not None else self.source_path.path()
        root = self.project_path.path()
        if not root and source:
            root = str(Path(source).with_name(Path(source).stem + "_ktal"))
            self.project_path.set_path(root)
        tomograms = (self.tomograms_path.path() or None) if self.source_kind.currentText() == FROM_PICKS else None
        return NewProject(root, source, layer, self.classes.classes(), self.recipe.recipe(), tomograms)

    def _request_create(self) -> None:
        self.createRequested.emit(self.new_project())

    def attach(self) -> None:
        """Follow the viewer's layer list (Image layers can be the subtomograms)."""
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    def detach(self) -> None:
        """Stop following the viewer's layer list (the widget is going away)."""
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self._refresh_layers)
