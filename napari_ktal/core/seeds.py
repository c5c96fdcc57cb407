"""Seeds: one default, and a stable stream per (seed, purpose) so runs repeat exactly.

``ktal-cryo`` (``--seed``), the napari widget and the Python API all start from
:data:`DEFAULT_SEED`, so the GUI and the CLI draw the same batches for a project.
"""

from __future__ import annotations

import hashlib

import numpy as np

DEFAULT_SEED = 0


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for (seed, parts): each cycle and role gets its own stream."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *parts))
