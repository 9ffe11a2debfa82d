"""DistributedDataParallel plumbing for ``torchrun``: the only module that talks to torch.distributed.

Under ``torchrun --nproc_per_node=N edgepipe build RECIPE`` every process runs the pipeline; finetune and
qat train on all ranks (a DistributedSampler shards the train split, gradients are all-reduced), everything
else runs on rank 0, which alone writes artifacts, manifests, logs and progress bars. Validation runs on
rank 0 over the full val set and its numbers are broadcast, so every rank takes the same early-stopping and
plateau decisions (simplest, and exactly the single-process numbers). Without torchrun's environment every
function here is a no-op and training is the plain single-process path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from edgepipe.errors import RecipeError

log = logging.getLogger(__name__)

# Rank 0 alone evaluates val/test and publishes a stage while the others wait at a barrier or a broadcast;
# NCCL's 10-minute default would abort a long test-set evaluation on a big split.
TIMEOUT = timedelta(minutes=60)


def _dist():
    import torch.distributed as dist

    return dist


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Processes training together: torchrun's WORLD_SIZE (1 without torchrun)."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """Rank 0: the one process that writes files, logs and progress bars."""
    return rank() == 0


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Join torchrun's process group for the duration of a build (nccl on CUDA, gloo on CPU)."""
    if world_size() <= 1:
        yield
        return
    import torch

    dist = _dist()
    if dist.is_initialized():  # a caller already joined: leave the group to it
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    log.info("DDP: %d processes, backend %s", dist.get_world_size(), backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def config() -> dict[str, int]:
    """Part of finetune's and qat's cache key: N processes train with an N-times larger batch, so a model
    trained under torchrun is not the single-process one (empty in one process: existing keys stay valid)."""
    return {"processes": world_size()} if is_distributed() else {}


def device():
    """This rank's device: cuda:LOCAL_RANK under torchrun, else cuda when there is one, else cpu."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    if not is_distributed():
        return torch.device("cuda")
    return torch.device("cuda", local_rank())


def barrier() -> None:
    if is_distributed():
        _dist().barrier()


def train_sampler(dataset: Any, seed: int, sampler_kind: str) -> Any:
    """The rank's shard of the train split, reshuffled each epoch by ``set_epoch`` (called in fit)."""
    if sampler_kind == "balanced":
        raise RecipeError(
            "data.sampler: balanced is not supported under torchrun (DDP); fix: use data.sampler: shuffle "
            "with finetune.class_weights: balanced (and qat.class_weights), or run in one process"
        )
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)


def wrap(model: Any, dev: Any) -> Any:
    """DDP around ``model`` (only its parameters that require grad are synchronised, so fit re-wraps when
    gradual unfreezing releases blocks); the model itself when not distributed."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dev.index] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sums(*values: float) -> tuple[float, ...]:
    """Sum per-rank counters (samples seen, loss sum, correct) over all ranks."""
    if not is_distributed():
        return values
    import torch

    dist = _dist()
    dev = device() if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return tuple(float(v) for v in t.tolist())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. validation numbers computed on rank 0 only)."""
    if not is_distributed():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out
