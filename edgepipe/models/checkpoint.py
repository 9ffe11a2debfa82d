"""The one way edgepipe reads a torch file: ``torch.load(weights_only=True)``, so no file runs code on load.

Checkpoints and training states therefore hold tensors and plain Python values only (numpy RNG state is
stored as a list, see train/resume.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.errors import ModelError

# what the finetune and qat stages write into model.pt (qat adds "quant"), and every reader relies on
CHECKPOINT_KEYS = ("arch", "model_cfg", "num_classes", "classes", "preprocessing", "state_dict")


def safe_load(path: Path | str, fix: str = "give a file written by torch.save of tensors/state dicts") -> Any:
    """``path`` read with weights_only=True; a corrupt, foreign or code-carrying pickle is a ModelError."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, foreign or unsafe pickle: one answer
        raise ModelError(
            f"{path} is not a torch checkpoint edgepipe can read safely ({type(exc).__name__}); fix: {fix}"
        ) from None


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """An edgepipe model.pt (finetune or qat stage), read safely and checked for the keys readers need."""
    fix = "give the model.pt written by the finetune or qat stage"
    ckpt = safe_load(path, fix)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ModelError(f"{path} is not an edgepipe checkpoint (missing {', '.join(missing)}); fix: {fix}")
    return ckpt
