"""Mixed precision and memory format for the training loop: what a recipe's explicit values mean.

``auto`` (and ``compile: auto``) is decided by timing a few training steps of each candidate on the device
at hand (autotune.py; on CUDA ``amp: auto`` stays float16 untimed); the functions here give the untimed
meaning of ``auto`` (float16 autocast and channels-last on CUDA, neither on a CPU). An explicit value is never
second-guessed: ``amp: on`` without CUDA is an error rather than a silent fall-back, ``amp: bf16`` is
bfloat16 autocast on any device (no loss scaling needed), ``channels_last: on`` applies on a CPU too.
"""

from __future__ import annotations

from typing import Any

from edgepipe.errors import RecipeError, StageError

AMP_SETTINGS = ("auto", "on", "off", "bf16")
LAYOUT_SETTINGS = ("auto", "on", "off")


def amp_dtype(setting: str, device: Any):
    """The autocast dtype for ``setting`` on ``device``, or None for full float32."""
    import torch

    if setting not in AMP_SETTINGS:
        raise RecipeError(f"amp: {setting!r} is not one of {', '.join(AMP_SETTINGS)}; fix: use one of them")
    cuda = device.type == "cuda"
    if setting == "bf16":
        return torch.bfloat16
    if setting == "on" and not cuda:
        raise StageError(
            f"finetune.amp: on needs a CUDA device, and this run is on {device.type}; "
            "fix: set finetune.amp to auto (float16 only on CUDA), bf16 (bfloat16 autocast, CPU too) or off"
        )
    return torch.float16 if setting == "on" or (setting == "auto" and cuda) else None


def channels_last(setting: str, device: Any) -> bool:
    """Whether to train in channels-last (NHWC) memory format."""
    if setting not in LAYOUT_SETTINGS:
        raise RecipeError(
            f"channels_last: {setting!r} is not one of {', '.join(LAYOUT_SETTINGS)}; fix: use one of them"
        )
    return setting == "on" or (setting == "auto" and device.type == "cuda")
