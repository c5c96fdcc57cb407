"""Data in: MRC subtomograms, labels CSVs, and the pool every pass reads from.

- :mod:`.mrc`         checking and reading MRC files (subtomograms, stacks, any MRC for viewing)
- :mod:`.labels_csv`  the text layer of a labels CSV (path,label)
- :mod:`.pool`        a project's volumes, normalised, in one memory-mapped file
- :mod:`.source`      the VolumeSource protocol the engine reads through
"""

from .mrc import (
    VolumeRef,
    find_volumes,
    inspect_mrc,
    iter_volumes,
    normalize,
    read_labels_csv,
    read_volumes,
)
from .pool import Pool, import_pool
from .source import ArraySource, VolumeSource

__all__ = [
    "ArraySource",
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
