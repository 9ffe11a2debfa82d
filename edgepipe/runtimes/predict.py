"""Batched prediction over a whole array: the one loop every parity check, benchmark and report uses."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def padded_logits(rt, x: np.ndarray, pad_to: int | None = None) -> np.ndarray:
    """Logits of one batch. ``pad_to``: the model takes only that batch size, so a shorter batch is
    zero-padded and the padding's logits dropped."""
    n = len(x)
    if pad_to is not None and n < pad_to:
        x = np.concatenate([x, np.zeros((pad_to - n, *x.shape[1:]), np.float32)])
    return np.asarray(rt.predict(x), dtype=np.float32)[:n]


def batch_logits(rt, batches: Iterable[np.ndarray], pad_to: int | None = None) -> np.ndarray:
    """Logits of a runtime over ``batches``, concatenated (each padded to ``pad_to`` as padded_logits)."""
    return np.concatenate([padded_logits(rt, x, pad_to) for x in batches])


def runtime_logits(rt, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """A runtime's logits for every row of ``x`` (float32 NCHW), ``batch`` rows at a time."""
    return batch_logits(rt, (x[i : i + batch] for i in range(0, len(x), batch)))


def torch_logits(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """A torch module's logits for every row of ``x``, in eval mode without autograd (parity reference)."""
    import torch

    model.eval()
    with torch.inference_mode():
        return np.concatenate(
            [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
        )
