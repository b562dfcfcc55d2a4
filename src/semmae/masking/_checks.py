"""Input checks that never make the host wait for the device.

On the CPU (outside ``torch.compile``) a check may read tensor values: it costs nothing and raises a precise
``ValueError``. On a GPU such a read (``.item()``, ``bool(t)``) waits for every queued kernel, and under
``torch.compile`` it breaks the graph; there the same condition becomes a device-side assert.
"""

from __future__ import annotations

import torch
from torch import Tensor


def may_read(t: Tensor) -> bool:
    """Whether a check may read ``t``'s values on the host (CPU tensors, outside ``torch.compile``)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def assert_on_device(condition: Tensor, message: str) -> None:
    """``condition`` (a bool tensor, any shape) must hold everywhere; checked on the device, no host sync."""
    torch._assert_async(condition.all(), message)
