"""Running models: devices, speed settings, inference, training, several processes.

- :mod:`.device`       only devices that work ("auto", "cuda:N", "cpu")
- :mod:`.speed`        autocast, cuDNN, channels-last, compile
- :mod:`.inference`    batched passes over a volume source, outputs asked for by name
- :mod:`.training`     one cycle's teacher + student (+ a strategy's auxiliary head)
- :mod:`.heads`        the base class of such heads
- :mod:`.distributed`, :mod:`.follower`   torchrun: rank 0 leads, the others follow
"""

from .device import auto_device, available_devices, parse_device, resolve_device
from .heads import AuxiliaryHead
from .inference import forward_outputs, predict
from .speed import SpeedOptions
from .training import TrainJob, TrainResult, train_pair

__all__ = [
    "AuxiliaryHead",
    "SpeedOptions",
    "TrainJob",
    "TrainResult",
    "auto_device",
    "available_devices",
    "forward_outputs",
    "parse_device",
    "predict",
    "resolve_device",
    "train_pair",
]
