"""Data in: MRC subtomograms, labels CSVs, and the pool every pass reads from.

- :mod:`.mrc`         checking and reading MRC files (subtomograms, stacks, any MRC for viewing)
- :mod:`.labels_csv`  the text layer of a labels CSV (path,label)
- :mod:`.pool`        a project's volumes, normalised, in one memory-mapped file
- :mod:`.source`      the VolumeSource protocol the engine reads through
- :mod:`.particles`   particle lists (RELION 4/5, Warp, Dynamo, copick, CSV), read and written back
- :mod:`.tomograms`   finding tomograms by name, opening them, reading slabs
- :mod:`.extract`     boxes cut from tomograms: checked plans, MRC files, pools
"""

from .extract import ExtractionPlan, extract_to_folder, import_picks_pool, plan_extraction
from .mrc import (
    VolumeRef,
    find_volumes,
    inspect_mrc,
    iter_volumes,
    normalize,
    read_labels_csv,
    read_volumes,
)
from .particles import PickList, PickOptions, read_picks
from .pool import Pool, Site, import_pool
from .source import ArraySource, VolumeSource

__all__ = [
    "ArraySource",
    "ExtractionPlan",
    "PickList",
    "PickOptions",
    "Site",
    "extract_to_folder",
    "import_picks_pool",
    "plan_extraction",
    "read_picks",
    "Pool",
    "VolumeRef",
    "VolumeSource",
    "find_volumes",
    "import_pool",
    "inspect_mrc",
    "iter_volumes",
    "normalize",
    "read_labels_csv",
    "read_volumes",
]
