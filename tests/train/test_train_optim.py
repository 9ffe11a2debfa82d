"""Optimisers and lr schedules (edgepipe.train.optim), and their recipe keys."""

import json
import math

import pytest
import torch

from edgepipe.errors import RecipeError
from edgepipe.pipeline import build
from edgepipe.recipe import FinetuneConfig, parse_recipe
from edgepipe.train.loop import FitSettings, fit
from edgepipe.train.optim import as_schedule, build_optimizer, build_scheduler
from tests.conftest import make_imagefolder, tiny_recipe

BASE = {"name": "r", "data": {"dataset": "fashion-mnist"}}


def _lrs(cfg: FinetuneConfig, steps_per_epoch: int, val_top1=None) -> list[list[float]]:
    """The lr each optimiser step used, per epoch, as fit() drives the schedule."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    out = []
    for epoch in range(cfg.epochs):
        out.append([])
        for _ in range(steps_per_epoch):
            out[-1].append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step_batch()
        sched.step_epoch(val_top1[epoch] if val_top1 else 50.0)
    return out


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({}, torch.optim.AdamW),
        ({"optimizer": "adam"}, torch.optim.Adam),
        ({"optimizer": "sgd"}, torch.optim.SGD),
    ],
)
def test_build_optimizer_makes_the_chosen_optimiser(options, kind):
    cfg = FinetuneConfig(lr=0.02, weight_decay=0.01, **options)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert type(opt) is kind
    group = opt.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.01
    if kind is torch.optim.SGD:
        assert group["momentum"] == 0.9 and group["nesterov"] is False


def test_sgd_takes_momentum_and_nesterov():
    cfg = FinetuneConfig(optimizer="sgd", momentum=0.8, nesterov=True)
    group = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg).param_groups[0]
    assert group["momentum"] == 0.8 and group["nesterov"] is True


def test_default_schedule_is_the_previous_linear_warmup_then_cosine():
    cfg = FinetuneConfig(epochs=4, warmup_epochs=1, lr=1.0)
    spe, warm, total = 5, 5, 20
    old = [  # the formula finetune used before schedules were configurable
        (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / (total - warm))))
        for s in range(total)
    ]
    assert sum(_lrs(cfg, spe), []) == pytest.approx(old)


def test_step_schedule_decays_by_gamma_every_step_size_epochs_after_warmup():
    cfg = FinetuneConfig(epochs=6, warmup_epochs=1, lr=1.0, scheduler="step", step_size=2, gamma=0.5)
    lrs = _lrs(cfg, steps_per_epoch=4)
    assert lrs[0] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert [e[0] for e in lrs[1:]] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])
    assert all(len(set(e)) == 1 for e in lrs[1:])  # constant within an epoch


def test_cosine_restarts_go_back_to_base_lr_with_cycles_growing_by_t_mult():
    cfg = FinetuneConfig(epochs=7, lr=1.0, scheduler="cosine_restarts", t0_epochs=1, t_mult=2)
    lrs = sum(_lrs(cfg, steps_per_epoch=4), [])
    restarts = [i for i, lr in enumerate(lrs) if lr == pytest.approx(1.0)]
    assert restarts == [0, 4, 12]  # cycles of 1, 2, 4 epochs
    assert lrs[2] == pytest.approx(0.5) and lrs[8] == pytest.approx(0.5)  # half-way down each cycle
    assert all(b < a for a, b in zip(lrs[4:11], lrs[5:12], strict=True))


def test_plateau_cuts_lr_when_val_top1_stalls_after_warmup():
    cfg = FinetuneConfig(
        epochs=6, warmup_epochs=1, lr=1.0, scheduler="plateau", plateau_patience=1, plateau_factor=0.5
    )
    lrs = _lrs(cfg, steps_per_epoch=2, val_top1=[10, 20, 20, 20, 20, 20])
    assert lrs[0] == [0.5, 1.0]  # warm-up
    # best 20 at epoch 1; epochs 2 and 3 do not beat it -> cut after epoch 3; again after epoch 5
    assert [e[0] for e in lrs[1:]] == [1.0, 1.0, 1.0, 0.5, 0.5]


def test_fit_steps_a_plateau_schedule_once_per_epoch_with_val_top1():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    cfg = FinetuneConfig(epochs=4, lr=0.1, scheduler="plateau", plateau_patience=0, plateau_factor=0.5)
    opt = build_optimizer(model.parameters(), cfg)
    result = fit(
        model,
        data,
        data[:1],
        optimizer=opt,
        scheduler=build_scheduler(opt, cfg, 3),
        criterion=torch.nn.CrossEntropyLoss(),
        device=torch.device("cpu"),
        settings=FitSettings(epochs=4, patience=10),
    )
    best, lr = -1.0, 0.1
    for row in result.history:  # history records the lr each epoch trained with
        assert row["lr"] == pytest.approx(lr)
        if row["val_top1"] > best * (1 + 1e-4):
            best = row["val_top1"]
        else:
            lr *= 0.5
    assert lr < 0.1, "val top-1 stalled at least once in this seeded run"


def test_a_plain_torch_scheduler_still_steps_per_batch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = as_schedule(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    opt.step()
    sched.step_batch()
    sched.step_epoch(1.0)
    assert opt.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize(
    ("finetune", "message"),
    [
        ({"optimizer": "rmsprop"}, r"finetune\.optimizer: 'rmsprop' is not one of"),
        ({"scheduler": "linear"}, r"finetune\.scheduler: 'linear' is not one of"),
        ({"step_size": 3}, r"finetune: step_size is only used with scheduler: step"),
        ({"nesterov": True}, r"finetune: nesterov is only used with optimizer: sgd"),
        ({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}, r"nesterov needs momentum > 0"),
        ({"scheduler": "cosine_restarts", "t_mult": 0}, r"finetune\.t_mult: must be >= 1"),
        ({"scheduler": "plateau", "plateau_factor": 1.5}, r"finetune\.plateau_factor: must be < 1"),
        ({"optimiser": "sgd"}, r"finetune\.optimiser: unknown key; did you mean 'optimizer'\?"),
    ],
)
def test_recipe_rejects_bad_optimiser_and_schedule_keys(finetune, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({**BASE, "finetune": finetune})


@pytest.mark.slow  # trains through the pipeline
def test_finetune_stage_trains_with_sgd_and_a_step_schedule(tmp_path):
    root = make_imagefolder(tmp_path / "photos", classes=3, per_class=8, size=32)
    finetune = {"epochs": 3, "lr": 0.04, "optimizer": "sgd", "nesterov": True}
    finetune |= {"scheduler": "step", "step_size": 1, "gamma": 0.5}
    recipe = parse_recipe(tiny_recipe(root, stages=["finetune"], finetune=finetune))
    build(recipe, tmp_path / "out")
    stage = tmp_path / "out" / recipe.name / "finetune"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["config"]["finetune"]["optimizer"] == "sgd"
    assert manifest["metrics"]["epochs_run"] == 3
    lrs = [float(line.split(",")[6]) for line in (stage / "history.csv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([0.02, 0.01, 0.005])  # lr at each epoch's end: halved every epoch
