"""finetune: transfer learning of a registry backbone with a new head; keeps the best val checkpoint."""

from __future__ import annotations

import logging
from typing import Any

from edgepipe.artifacts import StageResult, atomic_path
from edgepipe.data.loaders import SplitData
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.recipe import Recipe
from edgepipe.stages.base import SPLIT_DATA_KEYS, StageContext, StageSpec, seed_everything
from edgepipe.train import distributed as ddp
from edgepipe.train.freeze import freezer_for
from edgepipe.train.history import write_history
from edgepipe.train.trainer import device, evaluation_metrics, train_model

log = logging.getLogger(__name__)



def config(recipe: Recipe) -> dict[str, Any]:
    return {
        "seed": recipe.seed,
        "model": recipe.model.model_dump(),
        "finetune": recipe.finetune.model_dump(),
        # every data key but the split's (num_workers too: each worker draws its own augmentation stream)
        "data": recipe.data.model_dump(exclude=SPLIT_DATA_KEYS),
        **ddp.config(),
    }


def run(ctx: StageContext) -> StageResult:
    import torch

    r, cfg = ctx.recipe, ctx.recipe.finetune
    seed_everything(r.seed)
    pre = Preprocessing.for_model(r.model.arch, r.data)
    data = SplitData(ctx.input("split"), r.data, pre, r.seed)
    from edgepipe.models.build import build_model

    model, weights_source = build_model(r.model, len(data.classes), image_size=pre.input_size[-1])
    dev = device()
    model.to(dev)
    freezer = freezer_for(model, r.model.arch, r.model.freeze.trainable_last, r.model.freeze.schedule)
    freeze = freezer.summary(model) if freezer is not None else None
    result = train_model(model, data, r, cfg, dev, freezer, resume=ctx.resume_state("finetune"))
    if not ddp.is_main():  # rank 0 evaluates and writes the stage
        return StageResult()
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    evals = evaluation_metrics(model, data, dev, ctx.out_dir, title=f"finetune {r.model.arch}")
    checkpoint = {
        "arch": r.model.arch,
        "model_cfg": r.model.model_dump(),
        "num_classes": len(data.classes),
        "classes": data.classes,
        "preprocessing": pre.to_dict(),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "epoch": result.best_epoch,
        "weights_source": weights_source,
    }
    with atomic_path(ctx.out_dir / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    write_history(ctx.out_dir, result.history, title=f"finetune {r.model.arch}")
    metrics = {
        **evals,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "device": str(dev),
        "processes": ddp.world_size(),
        "weights_source": weights_source,
        "freeze": freeze,
        "speed": result.speed,
    }
    log.info("finetune: val top-1 %.2f, test top-1 %.2f", evals["val_top1"], evals["test_top1"])
    return StageResult(outputs={"checkpoint": "model.pt", "history": "history.csv"}, metrics=metrics)


STAGE = StageSpec(
    name="finetune",
    needs=("split",),
    outputs=("checkpoint", "history"),
    config=config,
    run=run,
    distributed=True,
)
