"""Small input widgets shared by the setup form and the session panel."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import KtalError
from ...core.loop.commands import DEFAULT_RECIPE
from ...core.project import JUNK_CLASS

BROWSE = "Browse…"


def shrinkable(combo: QComboBox, tip_shows_text: bool = False) -> None:
    """Let a combo box be narrower than its longest item (the dock decides the width).

    ``tip_shows_text``: its tooltip starts with its current text (for items as long as a user
    makes them, class names: the box may show them elided), then the tooltip it has now.
    """
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(10)
    if tip_shows_text:
        about = combo.toolTip()
        combo.currentTextChanged.connect(lambda text: combo.setToolTip("\n".join(t for t in (text, about) if t)))


class RecipeCombo(QComboBox):
    """The shipped recipes by name, any .toml the user browsed to, and a "Browse…" entry."""

    recipeChosen = Signal(str)  # a shipped name or a .toml path

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from ...core.recipe import builtin_recipes

        for name in builtin_recipes():
            self.addItem(name, name)
        self.addItem(BROWSE, None)
        self.setCurrentIndex(max(0, self.findData(DEFAULT_RECIPE)))
        shrinkable(self)
        self.setToolTip("Training recipe: network, epochs, batch sizes and the labeling budget.\n"
                        "quick: small and fast (CPU); paper-*: the paper's settings (GPU).")
        self._previous = self.currentIndex()
        self.activated.connect(self._on_activated)

    def recipe(self) -> str:
        return self.currentData() or self.itemData(self._previous)

    def set_recipe(self, name_or_path: str, emit: bool = False, label: str | None = None) -> None:
        """Select a shipped recipe by name or a .toml by path (added to the list if new)."""
        index = self.findData(name_or_path)
        if index >= 0 and label:
            self.setItemText(index, label)
        if index < 0:
            index = self.count() - 1  # before "Browse…"
            label = label or (Path(name_or_path).name if name_or_path.endswith(".toml") else name_or_path)
            self.insertItem(index, label, name_or_path)
            self.setItemData(index, name_or_path, Qt.ItemDataRole.ToolTipRole)
        self.setCurrentIndex(index)
        self._previous = index
        if emit:
            self.recipeChosen.emit(name_or_path)

    def _on_activated(self, index: int) -> None:
        if self.itemData(index) is not None:
            self._previous = index
            self.recipeChosen.emit(self.itemData(index))
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose a recipe", "", "Recipes (*.toml)")
        if path:
            self.set_recipe(path, emit=True)
        else:
            self.setCurrentIndex(self._previous)


class DeviceCombo(QComboBox):
    """The devices that work here, named as ``ktal-cryo --device`` takes them (auto, cuda:N, cpu).

    Filled from :func:`~napari_ktal.core.engine.available_devices`; a name set from code goes
    through the core's :func:`~napari_ktal.core.engine.parse_device` ('cuda' is 'cuda:0').
    ``deviceChosen`` is emitted for the user's choices only, so two combos can follow each other.
    """

    deviceChosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        shrinkable(self)
        self.setToolTip("Where cycles train. Only devices that work here are listed;\n"
                        "auto: the first GPU if it works, else the CPU.")
        self.activated.connect(lambda _: self.deviceChosen.emit(self.device()))

    def set_devices(self, devices: list[str]) -> None:
        keep = self.device()
        self.clear()
        self.addItems(devices)
        self.setCurrentIndex(max(0, self.findText(keep)))

    def device(self) -> str:
        return self.currentText() or "auto"

    def set_device(self, name: str) -> None:
        """Show ``name``; KtalError if it is not one of the devices that work here."""
        from ...core.engine import parse_device

        index = self.findText(parse_device(name))
        if index < 0:
            have = ", ".join(self.itemText(i) for i in range(self.count()))
            raise KtalError(f"device '{name}' does not work here; choose from {have}")
        self.setCurrentIndex(index)


class PathField(QWidget):
    """A line edit with a "Browse…" button for a folder or a file."""

    def __init__(self, placeholder: str, caption: str, folder: bool = True, filters: str = "",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText(placeholder)
        self.button = QPushButton(BROWSE, self)
        self.button.clicked.connect(self._browse)
        self._caption, self._folder, self._filters = caption, folder, filters
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.button)

    def path(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str | Path) -> None:
        self.edit.setText(str(path))

    def set_mode(self, folder: bool, filters: str = "") -> None:
        self._folder, self._filters = folder, filters

    def _browse(self) -> None:
        start = self.path() or str(Path.home())
        if self._folder:
            path = QFileDialog.getExistingDirectory(self, self._caption, start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, self._caption, start, self._filters)
        if path:
            self.set_path(path)


class ClassListEditor(QWidget):
    """Class names for a new project: add, rename (double-click), remove, add 'junk'."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.list = QListWidget(self)
        self.list.setMaximumHeight(110)
        self.list.setToolTip("Double-click a class to rename it. Classes can be changed later, too.")
        add = QPushButton("Add…", self)
        remove = QPushButton("Remove", self)
        junk = QPushButton(f"+ {JUNK_CLASS}", self)
        junk.setToolTip("Add a class for volumes that are not a particle (empty, ice, carbon, ...)")
        add.clicked.connect(self._ask_add)
        remove.clicked.connect(self._remove_selected)
        junk.clicked.connect(lambda: self.add(JUNK_CLASS))
        buttons = QHBoxLayout()
        for b in (add, remove, junk):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addLayout(buttons)

    def classes(self) -> list[str]:
        names = [self.list.item(i).text().strip() for i in range(self.list.count())]
        return [n for n in names if n]

    def set_classes(self, names: list[str]) -> None:
        self.list.clear()
        for n in names:
            self.add(n)

    def add(self, name: str) -> None:
        name = name.strip()
        if name and name not in self.classes():
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.list.addItem(item)

    def _ask_add(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name (e.g. ribosome):")
        if ok:
            self.add(name)

    def _remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
