"""Exceptions and warnings the core raises for problems a user can fix.

Shells catch :class:`KtalError` and show its message as one line (CLI) or a
notification (napari); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class KtalError(Exception):
    """A problem with the user's input, recipe, project or environment."""


class InputError(KtalError):
    """A data or labels file that cannot be used. The message names the file."""

    def __init__(self, path: str | Path | None, problem: str, hint: str = ""):
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.hint = hint
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}" + (f" ({hint})" if hint else ""))


class TrainingDiverged(KtalError):
    """A training whose loss went non-finite (NaN or infinite); the message says what to change."""


class RecipeError(KtalError):
    """A recipe that is not valid; the message names the key."""


class ProjectError(KtalError):
    """A project folder that cannot be opened or written."""


class Cancelled(Exception):
    """Raised inside the core when the caller's cancel flag is set."""


class InputWarning(UserWarning):
    """Input that was read, but only permissively (e.g. a slightly-off MRC header)."""
