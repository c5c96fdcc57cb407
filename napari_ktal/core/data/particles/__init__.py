"""Particle lists (picks) as cryo-ET tools write them, read, and written back with classes.

- :mod:`.base`          PickList, coordinate conventions, class numbers
- :mod:`.star`          RELION 5, RELION 4 and Warp STAR files (starfile)
- :mod:`.dynamo`        Dynamo tables with their .doc / .vll (dynamotable)
- :mod:`.copick_picks`  copick projects (the optional copick package)
- :mod:`.csv_picks`     tomogram,x,y,z[,label]
"""

from pathlib import Path

from ...errors import InputError
from . import copick_picks, csv_picks, dynamo, star
from .base import Convention, PickList, PickOptions, class_numbers, from_voxels, to_voxels

__all__ = ["FAMILIES", "Convention", "PickList", "PickOptions", "class_numbers", "detect", "from_voxels",
           "is_pick_list", "read_picks", "to_voxels"]

READERS = {"star": star.read, "dynamo": dynamo.read, "copick": copick_picks.read, "csv": csv_picks.read}
#: the file family each flavour is written back as
FAMILIES = {"relion5": "star", "relion4": "star", "warp": "star", "dynamo": "dynamo", "copick": "copick", "csv": "csv"}


def detect(path: Path) -> str:
    """``star``, ``dynamo``, ``copick`` or ``csv``, from the name (and for .json/.csv the content)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".star":
        return "star"
    if suffix == ".tbl":
        return "dynamo"
    if suffix == ".json" and copick_picks.is_copick_config(path):
        return "copick"
    if suffix == ".csv":
        return "csv"
    raise InputError(path, "is not a particle list this reads",
                     "expected a STAR file (RELION 4/5, Warp), a Dynamo .tbl, a copick configuration .json "
                     "or a CSV with tomogram,x,y,z")


def is_pick_list(path: Path) -> bool:
    """Whether ``path`` is a particle list rather than a labels CSV (path,label) or MRC data."""
    suffix = Path(path).suffix.lower()
    if suffix in (".star", ".tbl"):
        return True
    if suffix == ".json":
        return copick_picks.is_copick_config(path)
    return suffix == ".csv" and csv_picks.is_pick_csv(path)


def read_picks(path: str | Path, options: PickOptions | None = None) -> PickList:
    """Every row of the particle list at ``path``; InputError for an empty or unusable one."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise InputError(path, "does not exist")
    picks = READERS[detect(path)](path, options or PickOptions())
    if len(picks) == 0:
        raise InputError(path, "lists no particles", "an empty particle list gives nothing to label")
    return picks
