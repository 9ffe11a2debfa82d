"""Eager PyTorch backend: the reference every exported model is compared against."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import BenchInputError, RuntimeUnavailable
from edgepipe.runtimes.base import Runtime, Shape, check_batch

log = logging.getLogger(__name__)


def _torch():
    try:
        import torch
    except ImportError as e:
        raise RuntimeUnavailable("torch is not installed; fix: pip install torch") from e
    return torch


def _load_module(model: Any):
    """Accept an nn.Module, or a torch.export .pt2 file (safe to load, unlike pickled modules)."""
    torch = _torch()
    if isinstance(model, torch.nn.Module):
        return model
    path = Path(model)
    if path.suffix != ".pt2" or not path.is_file():
        raise BenchInputError(
            f"torch runtime needs an nn.Module or an existing torch.export .pt2 file, got {model!r}; "
            "fix: pass the module itself or save it with torch.export.save"
        )
    try:
        return torch.export.load(str(path)).module()
    except Exception as e:  # torch raises assorted errors for a corrupt archive
        raise BenchInputError(
            f"{path} is not a torch.export program; fix: re-save it with torch.export.save"
        ) from e


class TorchRuntime(Runtime):
    """Runs a module in eval + inference_mode with its own thread count, restoring the global afterwards."""

    name = "torch"

    def __init__(self, model: Any, threads: int = 2, input_shape: Shape | None = None):
        torch = _torch()
        self.model = _load_module(model)
        try:
            self.model.eval()
        except NotImplementedError:  # torch.export modules refuse eval(); their mode was fixed at export
            pass
        self.threads = int(threads)
        self.input_shape: Shape = tuple(input_shape) if input_shape else (None, None, None, None)
        self.options = {"threads": self.threads, "torch_version": torch.__version__, "mode": "eager"}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        torch = _torch()
        batch = check_batch(batch, self.input_shape, what="torch model")
        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                out = self.model(torch.from_numpy(batch))
        finally:
            torch.set_num_threads(saved)
        if isinstance(out, tuple | list):  # some exported programs return a tuple of outputs
            out = out[0]
        return out.detach().float().cpu().numpy()
