"""Running models: devices, speed settings, inference, training, several processes.

- :mod:`.device`       only devices that work ("auto", "cuda:N", "cpu")
- :mod:`.speed`        the recipe's [speed] resolved per device and phase: bf16, channels-last
- :mod:`.inference`    batched passes over a volume source, outputs asked for by name
- :mod:`.training`     one cycle's teacher + student (+ a strategy's auxiliary head)
- :mod:`.heads`        the base class of such heads
- :mod:`.contrastive`  SimCLR pretraining of an encoder on unlabeled volumes (loop.pretraining decides when)
- :mod:`.distributed`  torchrun: every rank runs the same program; thin helpers over torch.distributed
"""

from .device import auto_device, available_devices, parse_device, resolve_device
from .heads import AuxiliaryHead
from .inference import forward_outputs, predict
from .speed import Speed, describe_speed, native_bf16, resolve_speed
from .training import TrainJob, TrainResult, train_pair

__all__ = [
    "AuxiliaryHead",
    "Speed",
    "TrainJob",
    "TrainResult",
    "auto_device",
    "available_devices",
    "describe_speed",
    "forward_outputs",
    "native_bf16",
    "parse_device",
    "predict",
    "resolve_device",
    "resolve_speed",
    "train_pair",
]
