"""Numeric precision, chosen once per run and spelled the same by every stage: ``--precision auto|bf16|fp16|fp32``.

``auto`` is mixed precision where it pays: bf16 autocast on GPUs that support it (no loss scaling), fp16 autocast +
a grad scaler on older GPUs (V100/T4), and fp32 on the CPU, where bf16 matmuls are slower than fp32 on most
processors (``--precision bf16`` still asks for it there). :attr:`Precision.needs_grad_scaler` says whether the
trainer's loss scaler (:mod:`semmae.engine.trainer`) scales the loss: only for fp16.

TF32: with ``auto`` or ``fp32`` on a CUDA device, float32 matmuls and convolutions run on TF32 tensor cores
(``torch.set_float32_matmul_precision("high")``, ``cudnn.allow_tf32``; Ampere and later, a 10-bit mantissa on the
products, float32 accumulation - the trade-off timm and MAE-style training take). Under ``auto`` that covers what
autocast leaves in float32. ``bf16``/``fp16`` asked for explicitly leave PyTorch's defaults alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from semmae.engine.run_options import PRECISIONS
from semmae.errors import UserError


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run.

    Attributes:
        name: ``bf16``, ``fp16`` or ``fp32`` (never ``auto``).
        device_type: ``cpu`` or ``cuda`` (what ``torch.autocast`` is given).
    """

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for bf16/fp16, a no-op context for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Pick the precision once. ``auto``: bf16 on GPUs that support it (Ampere+), fp16 + grad scaler on older
    GPUs, fp32 on the CPU; ``auto``/``fp32`` on CUDA also allow TF32. Asking for fp16 on the CPU or bf16 on a GPU
    without it is a :class:`UserError`."""
    if name not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    kind, asked = device.type, name
    if kind not in ("cpu", "cuda"):
        return Precision("fp32", kind) if name in ("auto", "fp32") else _refuse(name, kind)
    bf16_ok = kind == "cpu" or native_bf16(device)
    if name == "auto":
        name = "fp32" if kind == "cpu" else ("bf16" if bf16_ok else "fp16")
    if name == "bf16" and not bf16_ok:
        raise UserError("--precision bf16 was asked for but this GPU does not support bf16; use fp16 or auto")
    if name == "fp16" and kind == "cpu":
        raise UserError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    if kind == "cuda" and asked in ("auto", "fp32"):
        allow_tf32()
    return Precision(name, kind)


def allow_tf32() -> None:
    """float32 matmuls and convolutions on TF32 tensor cores (see the module docstring)."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def native_bf16(device: torch.device) -> bool:
    """True on GPUs that compute in bf16 natively (compute capability 8.0+, Ampere and later; ROCm). Not
    ``torch.cuda.is_bf16_supported()``, whose default also counts emulated bf16 (slow on V100/T4, where fp16 +
    a grad scaler is the documented choice), and which asks the *current* device rather than the run's."""
    if torch.version.hip:
        return True
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def _refuse(name: str, kind: str) -> Precision:
    raise UserError(f"--precision {name} is not supported on device type {kind!r}; use fp32")
