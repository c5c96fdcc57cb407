"""A follower rank of a multi-process run: do the leader's commands until it says stop.

Kept apart from :mod:`.inference` and :mod:`.training` (which both use :mod:`.distributed`),
so that the table of commands is plain code, not a side effect of importing them.
"""

from __future__ import annotations

import torch

from . import distributed as dist
from .inference import follow_forward
from .training import follow_train

COMMANDS = {"forward": follow_forward, "train": follow_train}


def follow(device: torch.device) -> None:
    """Run the leader's commands (see :mod:`.distributed`) until it says stop."""
    try:
        while True:
            command, payload = dist.next_command()
            if command == "stop":
                return
            COMMANDS[command](payload, device)
    finally:
        dist.shutdown()
