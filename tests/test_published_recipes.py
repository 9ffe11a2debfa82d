"""The recipes that reproduce published set-ups load, validate and say what the set-ups did."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepipe.models.registry import available
from edgepipe.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PUBLISHED = (
    "mnv3_large_151animals",
    "resnet50_focal_restarts",
    "resnext50_gradual_unfreeze",
    "mnv3_large_label_smoothing",
    "mnv3_liteiresnet_ablation",
    "resnet50_cbam_focal",
    "resnext50_vit_hybrid",
)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads_and_names_a_registered_arch(path):
    r = load_recipe(path)
    assert r.name == path.stem or path.stem not in PUBLISHED
    assert r.model.arch in available()


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_recipes_start_from_imagenet_with_a_placeholder_root(name):
    r = load_recipe(RECIPES / f"{name}.yaml")
    assert r.model.pretrained == "imagenet" and str(r.data.root) == "/path/to/your/imagefolder"


def test_mnv3_151animals_larger_input_last_layers_then_qat_of_the_last_eight_blocks():
    r = load_recipe(RECIPES / "mnv3_large_151animals.yaml")
    assert r.model.arch == "mobilenet_v3_large" and r.data.image_size > 224
    assert r.model.freeze.trainable_last == 8 and r.qat.trainable_last == 8
    assert r.stages == ("finetune", "qat", "export", "bench")


def test_resnet50_focal_warm_restarts_under_100_mb():
    r = load_recipe(RECIPES / "resnet50_focal_restarts.yaml")
    assert r.model.arch == "resnet50" and r.finetune.loss == "focal"
    assert r.finetune.scheduler == "cosine_restarts" and r.finetune.patience >= r.finetune.t0_epochs
    assert r.bench.fail_if == ("size_mb>100",)


def test_resnext50_unfreezes_fc_then_layer4_layer3_then_layers_2_and_1():
    r = load_recipe(RECIPES / "resnext50_gradual_unfreeze.yaml")
    assert r.model.arch == "resnext50_32x4d"
    assert r.model.freeze.trainable_last == 0
    assert r.model.freeze.schedule == {10: 1, 20: 2, 30: 4}
    assert r.finetune.epochs > 30 and r.qat.trainable_last == 4


def test_resnext50_vit_hybrid_one_vit_tiny_block_from_a_local_checkpoint():
    r = load_recipe(RECIPES / "resnext50_vit_hybrid.yaml")
    m = r.model
    assert (m.arch, m.hybrid, m.vit_depth, m.vit_width, m.vit_heads, m.vit_mlp_ratio) == (
        "resnext50_32x4d", "vit", 1, 192, 3, 4.0
    )
    assert m.vit_weights.endswith(".safetensors") and r.data.image_size == 224


def test_mnv3_label_smoothing_adamw_cosine_amp_and_its_augmentation():
    r = load_recipe(RECIPES / "mnv3_large_label_smoothing.yaml")
    ft, aug = r.finetune, r.data.augment
    assert (ft.optimizer, ft.scheduler, ft.amp, ft.label_smoothing) == ("adamw", "cosine", "auto", 0.1)
    assert (r.data.batch_size, ft.epochs, ft.patience) == (64, 80, 10)
    assert aug.hflip and aug.rotation > 0 and aug.color_jitter > 0 and aug.random_erasing > 0
    assert aug.affine is not None and (aug.affine.translate, aug.affine.scale, aug.affine.shear) == (
        0.1,
        (0.9, 1.1),
        10,
    )
    assert aug.rrc_scale is None and aug.random_crop is not None


def test_liteiresnet_ablation_base_is_mnv3_with_eca_multiscale_fusion_and_arcmargin():
    r = load_recipe(RECIPES / "mnv3_liteiresnet_ablation.yaml")
    m = r.model
    assert (m.arch, m.pretrained, m.attention, m.fusion, m.head) == (
        "mobilenet_v3_large", "imagenet", "eca", "multiscale", "arcmargin"
    )
    assert "qat" in r.stages and "export" in r.stages  # every part of the variant has an INT8 path


def test_resnet50_cbam_focal_under_100_mb():
    r = load_recipe(RECIPES / "resnet50_cbam_focal.yaml")
    m = r.model
    assert (m.arch, m.attention, r.finetune.loss, r.qat.loss) == ("resnet50", "cbam", "focal", "focal")
    assert r.model.cbam_kernel == 7 and r.bench.fail_if == ("size_mb>100",)
    from edgepipe.models.build import build_model

    model, _ = build_model(r.model.model_copy(update={"pretrained": "none"}), 10)
    assert sum(p.numel() for p in model.parameters()) * 4 < 100e6  # FP32 bytes, 10 classes
