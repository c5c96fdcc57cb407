"""napari-ktal: knowledge-transfer active learning for cryo-ET subtomograms.

The compute core lives in :mod:`napari_ktal.core` (numpy + torch, no Qt).
Two thin shells drive it: the ``ktal-cryo`` command line (:mod:`napari_ktal.cli`)
and the napari plugin (:mod:`napari_ktal._napari`).
"""

__version__ = "0.1.0"
