"""amp and channels_last: recipe values, what they resolve to per device, and that fit() applies them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepipe.errors import RecipeError, StageError
from edgepipe.recipe import FinetuneConfig, QatConfig, parse_recipe
from edgepipe.train import precision
from edgepipe.train.loop import FitHooks, FitSettings, fit

CPU = torch.device("cpu")
BASE = {"name": "r", "data": {"dataset": "fashion-mnist"}}


def _net() -> nn.Module:
    torch.manual_seed(0)
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), *pool, nn.Linear(4, 3))


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 3, 8, 8, generator=g), torch.arange(8) % 3), batch_size=4)


def _fit(model, **options):
    seen: dict[str, object] = {}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]

    def record(epoch, row):
        seen["nhwc"] = all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)

    dtypes = []
    convs[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype) if m.training else None)
    before = convs[0].weight.detach().clone()
    fit(
        model,
        _loader(),
        _loader(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scheduler=None,
        criterion=nn.CrossEntropyLoss(),
        device=CPU,
        settings=FitSettings(epochs=1, patience=1, **options),
        hooks=FitHooks(on_epoch_end=record),
    )
    seen["trained"] = not torch.equal(before, convs[0].weight.detach())
    seen["dtypes"] = set(dtypes)
    seen["nhwc_after"] = convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    return seen


def test_amp_and_channels_last_default_to_auto_and_read_yaml_on_off():
    r = parse_recipe(BASE)
    assert r.finetune.amp == "auto" and r.finetune.channels_last == "auto" and r.qat.channels_last == "auto"
    assert FinetuneConfig(amp=True).amp == "on" and FinetuneConfig(amp=False).amp == "off"
    assert QatConfig(channels_last=True).channels_last == "on"


def test_amp_values_are_validated_and_qat_has_no_amp():
    with pytest.raises(RecipeError, match=r"finetune\.amp: 'fp8' is not one of"):
        parse_recipe({**BASE, "finetune": {"amp": "fp8"}})
    with pytest.raises(RecipeError, match=r"qat\.amp: unknown key"):
        parse_recipe({**BASE, "qat": {"amp": "on"}})


def test_auto_is_off_on_cpu_and_on_with_cuda():
    cuda = torch.device("cuda")
    assert precision.amp_dtype("auto", CPU) is None and precision.amp_dtype("auto", cuda) == torch.float16
    assert precision.amp_dtype("bf16", CPU) == torch.bfloat16 and precision.amp_dtype("off", cuda) is None
    assert not precision.channels_last("auto", CPU) and precision.channels_last("auto", cuda)
    assert precision.channels_last("on", CPU)


def test_amp_on_without_cuda_is_an_error_not_a_fallback():
    with pytest.raises(StageError, match=r"finetune\.amp: on needs a CUDA device.*fix:"):
        fit(_net(), _loader(), _loader(), optimizer=None, scheduler=None, criterion=None, device=CPU,
            settings=FitSettings(epochs=1, patience=1, amp="on"))


def test_channels_last_on_trains_in_nhwc_on_cpu_and_hands_the_model_back_nchw():
    seen = _fit(_net(), channels_last="on")
    assert seen["nhwc"] and seen["trained"] and not seen["nhwc_after"]
    assert seen["dtypes"] == {torch.float32}


def test_default_trains_in_float32_nchw_on_cpu():
    seen = _fit(_net())
    assert not seen["nhwc"] and seen["trained"] and seen["dtypes"] == {torch.float32}


def test_amp_bf16_autocasts_on_cpu():
    seen = _fit(_net(), amp="bf16")
    assert seen["trained"] and seen["dtypes"] == {torch.bfloat16}


def test_a_setting_outside_the_recipe_choices_is_a_recipe_error():
    with pytest.raises(RecipeError, match="amp: 'fp8' is not one of auto, on, off, bf16; fix:"):
        precision.amp_dtype("fp8", CPU)
    with pytest.raises(RecipeError, match="channels_last: 'nhwc' is not one of auto, on, off; fix:"):
        precision.channels_last("nhwc", CPU)
