"""The networks: 3D ResNet teacher and student, transfer losses, teacher-student distances.

- :mod:`.resnet3d`   ResNet3D (ResNet-18 teacher, ResNet-10 student), its config and named outputs
- :mod:`.transfer`   attention transfer (the paper's) and the ablation losses
- :mod:`.distances`  KL(teacher || student) and the other scores of the pair's disagreement
"""

from .distances import DISTANCES, kl_score
from .resnet3d import (
    OUTPUTS,
    ModelOutput,
    ResNet3D,
    ResNetConfig,
    build_pair,
    output,
    pair_configs,
    pooled_stages,
)
from .transfer import TRANSFER_LOSSES, attention_transfer_loss

__all__ = [
    "DISTANCES",
    "OUTPUTS",
    "TRANSFER_LOSSES",
    "ModelOutput",
    "ResNet3D",
    "ResNetConfig",
    "attention_transfer_loss",
    "build_pair",
    "kl_score",
    "output",
    "pair_configs",
    "pooled_stages",
]
