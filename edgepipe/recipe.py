"""Typed recipe: pydantic models of the YAML a user writes, and load_recipe().

Unknown keys are errors (a misspelt key must never be silently ignored) and every error names the key's path
and what would fix it, e.g. ``qat.epochs: must be >= 0 (got -1)``.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgepipe.constants import CAM_METHODS, TARGET_NAMES
from edgepipe.errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AffineConfig(_Strict):
    """Random translation, scaling and shear (v2.RandomAffine); ``rotation`` stays its own key."""

    translate: float = Field(
        default=0.0, ge=0, le=1, description="max shift, as a fraction of width and height", examples=[0.1]
    )
    scale: tuple[float, float] | None = Field(
        default=None, description="zoom range; null: none", examples=[[0.9, 1.1]],
        json_schema_extra={"doc_type": "`[low, high]`, 0 < low <= high <= 4, or null"},
    )
    shear: float = Field(default=0.0, ge=0, lt=90, description="max x-shear, degrees", examples=[10])

    @model_validator(mode="after")
    def _does_something(self) -> AffineConfig:
        if self.scale is not None and not (0 < self.scale[0] <= self.scale[1] <= 4):
            raise ValueError(
                f"affine.scale must be [low, high] with 0 < low <= high <= 4 (got {list(self.scale)})"
            )
        if self.translate == 0 and self.shear == 0 and self.scale in (None, (1.0, 1.0)):
            raise ValueError(
                "affine changes nothing; fix: give translate, scale or shear (e.g. {translate: 0.1}) "
                "or remove affine"
            )
        return self


class PerspectiveConfig(_Strict):
    """Random perspective warp (v2.RandomPerspective)."""

    distortion_scale: float = Field(gt=0, le=1, description="how far the corners may move", examples=[0.2])
    p: float = Field(default=0.5, gt=0, le=1, description="the share of images warped", examples=[0.3])


class RandomCropConfig(_Strict):
    """A plain random crop (v2.RandomCrop) of image_size from the image resized to image_size / crop_pct,
    optionally padded first: shifts the content without rescaling it, unlike RandomResizedCrop."""

    padding: int = Field(
        default=0, ge=0, le=512, description="pixels added on each side before cropping", examples=[4]
    )
    padding_mode: Literal["constant", "edge", "reflect"] = Field(
        default="constant", description="`constant` pads with black", examples=["reflect"]
    )


class AugmentConfig(_Strict):
    """Training-time augmentation (torchvision.transforms.v2); evaluation never augments."""

    hflip: bool = Field(default=True, description="random horizontal flip", examples=[False])
    rrc_scale: tuple[float, float] | None = Field(
        default=(0.8, 1.0), description="RandomResizedCrop area range; null: resize + centre crop",
        examples=[[0.5, 1.0]], json_schema_extra={"doc_type": "`[low, high]`, 0 < low <= high <= 1, or null"},
    )
    rotation: float = Field(
        default=0.0, ge=0, le=180, description="max random rotation, degrees", examples=[10]
    )
    color_jitter: float = Field(
        default=0.0, ge=0, le=1, description="brightness/contrast/saturation jitter", examples=[0.2]
    )
    random_erasing: float = Field(
        default=0.0, ge=0, le=1, description="RandomErasing probability", examples=[0.1]
    )
    affine: AffineConfig | None = Field(
        default=None,
        description="RandomAffine (keys below); an affine that changes nothing is an error; null: none",
        examples=[{"translate": 0.1, "scale": [0.9, 1.1], "shear": 10}],
    )
    perspective: PerspectiveConfig | None = Field(
        default=None, description="RandomPerspective (keys below); null: none",
        examples=[{"distortion_scale": 0.2, "p": 0.5}],
    )
    random_crop: RandomCropConfig | None = Field(
        default=None,
        description="a plain random crop (RandomCrop): resize to `image_size / crop_pct`, pad (keys below), "
        "take a random `image_size` crop; shifts the content without rescaling it. Needs `rrc_scale: null` "
        "(the two are alternative crops); with `crop_pct: 1.0` it needs `padding > 0` (else it crops the "
        "whole image)",
        examples=[{"padding": 4}],
    )

    @model_validator(mode="after")
    def _scale_range(self) -> AugmentConfig:
        if self.rrc_scale is not None:
            lo, hi = self.rrc_scale
            if not (0 < lo <= hi <= 1):
                raise ValueError("rrc_scale must be [low, high] with 0 < low <= high <= 1")
            if self.random_crop is not None:
                raise ValueError(
                    "random_crop and rrc_scale are two ways to crop; fix: set rrc_scale: null to use "
                    "random_crop, or remove random_crop"
                )
        return self


class DataConfig(_Strict):
    dataset: str | None = Field(
        default=None, description="a built-in dataset; give this or `root`", examples=["fashion-mnist"],
        json_schema_extra={"doc_type": "built-in name or null"},
    )
    root: Path | None = Field(
        default=None,
        description="an ImageFolder: one sub-folder of images per class; give this or `dataset`",
        examples=["data/my_photos"],
    )
    image_size: int = Field(
        default=224, ge=16, le=1024, description="model input size, pixels", examples=[160]
    )
    crop_pct: float = Field(
        default=0.875, gt=0, le=1, description="eval: resize to `image_size / crop_pct`, centre-crop",
        examples=[1.0],
    )
    mean: tuple[float, float, float] | None = Field(
        default=None,
        description="normalisation mean (RGB, on pixels scaled to 0..1); null: what the model's weights "
        "expect (its registry entry)",
        examples=[[0.5, 0.5, 0.5]],
    )
    std: tuple[float, float, float] | None = Field(
        default=None, description="normalisation std (RGB, on pixels scaled to 0..1); null: the model's",
        examples=[[0.5, 0.5, 0.5]],
    )
    val_fraction: float = Field(
        default=0.1, gt=0, lt=0.5, description="stratified share of train held out for validation",
        examples=[0.15],
    )
    test_fraction: float = Field(
        default=0.1, gt=0, lt=0.5, description="test share, only when the source has no test split",
        examples=[0.2],
    )
    limit_per_class: int | None = Field(
        default=None, ge=1, description="subsample each class (smoke runs); null: every image", examples=[40]
    )
    batch_size: int = Field(
        default=64, ge=1, le=4096, description="batch size for training and evaluation", examples=[128]
    )
    num_workers: int = Field(default=0, ge=0, le=64, description="DataLoader worker processes", examples=[2])
    augment: AugmentConfig = AugmentConfig()
    sampler: Literal["shuffle", "balanced"] = Field(
        default="shuffle",
        description="`balanced`: draw train images with probability 1 / class size (with replacement, same "
        "epoch length), so every class is seen equally often (imbalanced sets)",
        examples=["balanced"],
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.dataset is None) == (self.root is None):
            raise ValueError(
                "give exactly one of data.dataset (a built-in name) or data.root (an ImageFolder)"
            )
        crop = self.augment.random_crop
        whole = round(self.image_size / self.crop_pct) == self.image_size
        if crop is not None and crop.padding == 0 and whole:
            raise ValueError(
                "augment.random_crop with padding 0 and crop_pct 1.0 crops the whole image (does nothing); "
                "fix: set random_crop.padding > 0 or crop_pct < 1"
            )
        return self


def _check_trainable(value: object) -> object:
    """A block count (int >= 0) or 'all'. Checked before pydantic: the error then names the key alone."""
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"must be a whole number of blocks >= 0 or 'all' (got {value!r})")


def _as_count(value: int | str) -> float:
    return float("inf") if value == "all" else float(value)


class FreezeConfig(_Strict):
    """Train only the last N backbone blocks (plus the head); optionally unfreeze more as epochs pass."""

    trainable_last: int | Literal["all"] = Field(
        default="all", description="train only the last N blocks (+ head); `0`: head only", examples=[8],
        json_schema_extra={"doc_type": "int >= 0 or `all`"},
    )
    schedule: dict[int, int | Literal["all"]] = Field(
        default_factory=dict,
        description="gradual unfreezing (finetune): from that epoch (0-based) train the last N blocks; "
        "counts may only grow",
        examples=[{10: 12, 20: "all"}], json_schema_extra={"doc_type": "`{epoch: N or all}`"},
    )

    @field_validator("trainable_last", mode="before")
    @classmethod
    def _trainable(cls, v: object) -> object:
        return _check_trainable(v)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, v: object) -> object:
        if not isinstance(v, dict):
            raise ValueError(
                f"must be a mapping of epoch to trainable_last, e.g. {{10: 8, 20: all}} (got {v!r})"
            )
        for epoch, n in v.items():
            if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
                raise ValueError(f"epoch {epoch!r}: epochs must be whole numbers >= 0")
            try:
                _check_trainable(n)
            except ValueError as exc:
                raise ValueError(f"epoch {epoch}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _only_unfreezes(self) -> FreezeConfig:
        before, what = self.trainable_last, "trainable_last"
        for epoch in sorted(self.schedule):
            n = self.schedule[epoch]
            if before == "all" and what == "trainable_last":
                raise ValueError(
                    "schedule unfreezes blocks but trainable_last is 'all' (nothing is frozen); "
                    "fix: set model.freeze.trainable_last to the blocks trained before its first epoch"
                )
            if _as_count(n) < _as_count(before):
                raise ValueError(
                    f"schedule epoch {epoch} trains {n} block(s), fewer than {before} ({what}); "
                    "fix: gradual unfreezing only unfreezes, so give non-decreasing counts"
                )
            before, what = n, f"schedule epoch {epoch}"
        return self


class ModelConfig(_Strict):
    arch: str = Field(
        default="mobilenet_v3_large", description="backbone, a model-registry name (the choices: below)",
        examples=["mobilenet_v3_small"], json_schema_extra={"doc_type": "registry name"},
    )
    pretrained: str = Field(
        default="none", description="starting weights (the head is always new)", examples=["imagenet"],
        json_schema_extra={"doc_type": "`imagenet`, `none`, or a path to a state dict"},
    )
    width_mult: float = Field(
        default=1.0, gt=0, le=2, description="MobileNetV3 width (1.0 for ImageNet weights)", examples=[0.5]
    )
    dropout: float = Field(
        default=0.2, ge=0, lt=1, description="dropout before the classifier", examples=[0.3]
    )
    bn_momentum: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="override BatchNorm momentum (MobileNetV3's 0.01 is too slow for a few hundred steps); "
        "null: the arch's",
        examples=[0.1],
    )
    freeze: FreezeConfig = FreezeConfig()
    attention: Literal["se", "eca", "cbam", "none"] | None = Field(
        default=None,
        description="MobileNetV3: replaces squeeze-excite in the blocks that have it; ResNet/ResNeXt: added "
        "to every bottleneck, on the residual branch before the skip add. null: the arch's own (`se` in "
        "MobileNetV3, none in ResNets). Other archs refuse it",
        examples=["eca"],
    )
    eca_kernel: int | None = Field(
        default=None, ge=1, le=15,
        description="`eca` only: the 1-D conv size across channels; null: ECA-Net's size from the channel "
        "count",
        examples=[5], json_schema_extra={"doc_type": "odd 1..15 or null"},
    )
    cbam_reduction: int = Field(
        default=16, ge=1, le=256, description="`cbam` only: channel-MLP width is channels / this",
        examples=[32],
    )
    cbam_kernel: int = Field(
        default=7, ge=1, le=15, description="`cbam` only: the spatial gate's conv size", examples=[3],
        json_schema_extra={"doc_type": "odd 1..15"},
    )
    variant: Literal["standard", "minimalistic"] = Field(
        default="standard",
        description="MobileNetV3 Large/Small only: `minimalistic` is the paper's INT8- and "
        "accelerator-friendly block table (no squeeze-excite, ReLU for every h-swish, 3x3 depthwise "
        "everywhere; [docs/mobilenet_minimalistic.md](mobilenet_minimalistic.md)). No ImageNet weights "
        "(pretrained: none or a PATH); refuses `attention`",
        examples=["minimalistic"],
    )
    fusion: Literal["none", "multiscale"] = Field(
        default="none",
        description="MobileNetV3 only: global-average-pool the last block at 1/8 and 1/16 resolution and the "
        "last conv, concatenated before the classifier (its first Linear widens and starts fresh)",
        examples=["multiscale"],
    )
    head: Literal["linear", "arcmargin"] = Field(
        default="linear",
        description="`arcmargin`: cosine head, logits `arc_scale * cos(feature, class weight)`; training "
        "adds `arc_margin` to the target's angle (ArcFace) in the loss (with `loss: ce` or `focal`); "
        "validation, QAT's evaluation and the exported model use the plain scaled cosines, an L2 "
        "normalisation then one MatMul",
        examples=["arcmargin"],
    )
    arc_scale: float = Field(
        default=30.0, gt=0, le=128, description="`arcmargin` only: the logit scale s", examples=[16]
    )
    arc_margin: float = Field(
        default=0.5, ge=0, le=1.5, description="`arcmargin` only: the additive angular margin m, radians",
        examples=[0.3],
    )
    hybrid: Literal["none", "vit"] = Field(
        default="none",
        description="`resnet50`, `resnext50_32x4d` only: `vit` puts ViT encoder blocks after `layer4` (its "
        "map projected by a 1x1 conv to `vit_width` tokens, a class token and learned positions for the "
        "image size's grid, pre-norm blocks, pooled (`vit_pool`) and normalised into `fc`); quantizable "
        "(integer attention and MLP matmuls). Not with `attention`. See [hybrid.md](hybrid.md)",
        examples=["vit"],
    )
    vit_depth: int = Field(default=1, ge=1, le=12, description="`vit` only: encoder blocks", examples=[2])
    vit_width: int = Field(
        default=192, ge=8, le=1024, description="`vit` only: token width (ViT-tiny's 192)", examples=[192],
        json_schema_extra={"doc_type": "8..1024, a multiple of `vit_heads`"},
    )
    vit_heads: int = Field(
        default=3, ge=1, le=16, description="`vit` only: attention heads (ViT-tiny's 3)", examples=[3]
    )
    vit_mlp_ratio: float = Field(
        default=4.0, gt=0, le=8,
        description="`vit` only: MLP hidden width / `vit_width` (ViT-tiny: 768 / 192)",
        examples=[4],
    )
    vit_pool: Literal["avg", "token"] = Field(
        default="avg",
        description="`vit` only: the head's input, normalised by the final LayerNorm: `avg`, the mean of the "
        "spatial tokens (timm's `global_pool='avg'`; layer 4's projected features reach the head along the "
        "residual stream, as through ResNeXt's own average pool); `token`, the class token (ViT's own)",
        examples=["token"],
    )
    vit_weights: str | None = Field(
        default=None,
        description="`vit` only: a local timm (`blocks.N.attn.qkv`, ...) or Hugging Face "
        "(`encoder.layer.N.attention.attention.query`, ...) ViT checkpoint file (`.safetensors`, `.pth`, "
        "`.bin`): its first `vit_depth` blocks, class token, final norm and positions (resampled to the "
        "layer-4 grid) load into the encoder; the patch embedding is unused. A hub name is refused (nothing "
        "is downloaded): download the file and give its path. null: initialisation",
        examples=["~/ckpt/vit_tiny_patch16_224.safetensors"], json_schema_extra={"doc_type": "path or null"},
    )

    @model_validator(mode="after")
    def _variant_options(self) -> ModelConfig:
        for key in sorted(self.model_fields_set & _MODEL_ONLY_WITH.keys()):
            selector, choice = _MODEL_ONLY_WITH[key]
            default = type(self).model_fields[key].default
            if getattr(self, selector) != choice and getattr(self, key) != default:
                raise ValueError(
                    f"{key} is only used with {selector}: {choice} "
                    f"(got {selector}: {getattr(self, selector)}); "
                    f"fix: set {selector}: {choice} or remove {key}"
                )
        if self.variant == "minimalistic" and self.attention not in (None, "none"):
            raise ValueError(
                f"attention: {self.attention} has no place in variant: minimalistic (it has no "
                "squeeze-excite to replace); fix: remove attention, or set variant: standard"
            )
        if self.hybrid == "vit":
            if self.vit_width % self.vit_heads:
                raise ValueError(
                    f"vit_width {self.vit_width} does not split into vit_heads {self.vit_heads} equal heads; "
                    f"fix: make vit_width a multiple of vit_heads (e.g. {self.vit_heads * 64})"
                )
            if self.attention not in (None, "none"):
                raise ValueError(
                    f"hybrid: vit and attention: {self.attention} are not built together; fix: remove one"
                )
        for key in ("eca_kernel", "cbam_kernel"):
            k = getattr(self, key)
            if k is not None and k % 2 == 0:
                raise ValueError(f"{key} must be odd, so the output keeps its size (got {k}); fix: {k + 1}")
        return self


# model keys that only one choice uses (as _ONLY_WITH below for the train options)
_MODEL_ONLY_WITH = {
    "eca_kernel": ("attention", "eca"),
    "cbam_reduction": ("attention", "cbam"),
    "cbam_kernel": ("attention", "cbam"),
    "arc_scale": ("head", "arcmargin"),
    "arc_margin": ("head", "arcmargin"),
    "vit_depth": ("hybrid", "vit"),
    "vit_width": ("hybrid", "vit"),
    "vit_heads": ("hybrid", "vit"),
    "vit_mlp_ratio": ("hybrid", "vit"),
    "vit_pool": ("hybrid", "vit"),
    "vit_weights": ("hybrid", "vit"),
}


# An option that only one choice uses, and that choice: setting it while another is chosen is an error
# (it would do nothing, as silently as a misspelt key).
_ONLY_WITH = {
    "momentum": ("optimizer", "sgd"),
    "nesterov": ("optimizer", "sgd"),
    "step_size": ("scheduler", "step"),
    "gamma": ("scheduler", "step"),
    "plateau_patience": ("scheduler", "plateau"),
    "plateau_factor": ("scheduler", "plateau"),
    "t0_epochs": ("scheduler", "cosine_restarts"),
    "t_mult": ("scheduler", "cosine_restarts"),
    "focal_gamma": ("loss", "focal"),
}


def _on_off(value: object) -> object:
    """YAML 1.1 reads unquoted on/off (and yes/no) as booleans: read them back as the words."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


class _TrainOptions(_Strict):
    """Optimiser, lr schedule, loss and clipping: the same knobs for finetune and qat (one loop)."""

    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        default="adamw", description="optimiser (`weight_decay` applies to each)", examples=["sgd"]
    )
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd only", examples=[0.95])
    nesterov: bool = Field(default=False, description="sgd only; needs momentum > 0", examples=[True])
    scheduler: Literal["cosine", "step", "plateau", "cosine_restarts"] = Field(
        default="cosine",
        description="lr schedule after `warmup_epochs` of linear warm-up; cosine, step and restarts are "
        "stepped per batch, plateau once per epoch on val top-1",
        examples=["step"],
    )
    step_size: int = Field(default=10, ge=1, description="step: epochs between decays", examples=[5])
    gamma: float = Field(default=0.1, gt=0, le=1, description="step: lr factor at each decay", examples=[0.5])
    plateau_patience: int = Field(
        default=2, ge=0, description="plateau: epochs without a val top-1 gain before a cut", examples=[3]
    )
    plateau_factor: float = Field(
        default=0.1, gt=0, lt=1, description="plateau: lr factor at each cut", examples=[0.5]
    )
    t0_epochs: int = Field(
        default=10, ge=1, description="cosine_restarts: length of the first cycle, epochs", examples=[5]
    )
    t_mult: int = Field(
        default=1, ge=1, le=10, description="cosine_restarts: each cycle is this many times longer",
        examples=[2],
    )
    loss: Literal["ce", "focal"] = Field(
        default="ce", description="cross-entropy, or focal loss (down-weights easy examples)",
        examples=["focal"],
    )
    focal_gamma: float = Field(
        default=2.0, ge=0, le=10,
        description="focal only: the (1 - p)^gamma exponent; 0 equals cross-entropy",
        examples=[1.5],
    )
    class_weights: Literal["none", "balanced"] = Field(
        default="none",
        description="`balanced`: weight class c by n / (classes x count_c) from the train split; use this or "
        "`data.sampler: balanced`, not both",
        examples=["balanced"],
    )
    grad_clip_norm: float | None = Field(
        default=None, gt=0, description="clip the global gradient norm before each step; null: no clipping",
        examples=[1.0],
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="train in channels-last (NHWC) memory format; `auto`: chosen by timing (see \"auto: "
        "chosen by measurement\" below, train/autotune.py); `on` applies on a CPU too. The model is handed "
        "back (and saved) in the usual layout",
        examples=["on"],
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="`torch.compile` the model for training (eager evaluation; a short last batch runs "
        "eagerly, no second compile); `auto`: only if timing shows its speed-up pays for its compile time "
        "over the stage's planned steps; `on`: always (a compile error then stops the stage). Needs a C++ "
        "compiler on a CPU",
        examples=["off"],
    )

    @field_validator("channels_last", "compile", mode="before")
    @classmethod
    def _switch(cls, v: object) -> object:
        return _on_off(v)

    @model_validator(mode="after")
    def _options_in_use(self) -> _TrainOptions:
        for key in sorted(self.model_fields_set & _ONLY_WITH.keys()):
            selector, choice = _ONLY_WITH[key]
            chosen = getattr(self, selector)
            if chosen != choice and getattr(self, key) != type(self).model_fields[key].default:
                raise ValueError(
                    f"{key} is only used with {selector}: {choice} (got {selector}: {chosen}); "
                    f"fix: set {selector}: {choice} or remove {key}"
                )
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0; fix: set momentum (e.g. 0.9) or nesterov: false")
        return self


class FinetuneConfig(_TrainOptions):
    epochs: int = Field(
        default=10, ge=0, description="training epochs (at most: early stopping)", examples=[30]
    )
    lr: float = Field(default=1e-3, gt=0, description="peak learning rate", examples=[0.0005])
    weight_decay: float = Field(default=0.05, ge=0, description="weight decay", examples=[0.01])
    label_smoothing: float = Field(
        default=0.1, ge=0, lt=1, description="label smoothing (ce and focal)", examples=[0.0]
    )
    warmup_epochs: int = Field(
        default=0, ge=0, description="linear lr warm-up over these first epochs (per batch)", examples=[1]
    )
    patience: int = Field(
        default=5, ge=1,
        description="early stopping: epochs without a val top-1 gain; the best epoch's weights are kept",
        examples=[10],
    )
    amp: Literal["auto", "on", "off", "bf16"] = Field(
        default="auto",
        description="mixed precision. `auto`: float16 autocast + GradScaler with CUDA; on a CPU with native "
        "bf16 (AVX512_BF16, AMX) bf16 autocast if timing shows it faster, else float32; `on`: the same, and "
        "an error without CUDA (never a silent fall-back); `bf16`: bfloat16 autocast (no loss scaling) on "
        "CUDA or CPU (slow on CPUs without native bf16); `off`: float32. YAML reads unquoted "
        "`on`/`off`/`true`/`false` as booleans: they mean `on`/`off`. finetune only: QAT trains in float32 "
        "(its fake-quant ranges; torch's fused fake-quant has no half kernels, pytorch/pytorch#94371)",
        examples=["bf16"],
    )
    max_batches_per_epoch: int | None = Field(
        default=None, ge=1, description="cap an epoch's batches; null: every batch", examples=[200]
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_switch(cls, v: object) -> object:
        return _on_off(v)


class QatConfig(_TrainOptions):
    epochs: int = Field(default=3, ge=0, description="QAT epochs", examples=[4])
    lr: float = Field(default=1e-4, gt=0, description="peak learning rate", examples=[0.00005])
    weight_decay: float = Field(default=0.0, ge=0, description="weight decay", examples=[0.0001])
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="label smoothing", examples=[0.1])
    warmup_epochs: int = Field(default=0, ge=0, description="linear lr warm-up", examples=[1])
    trainable_last: int | Literal["all"] | None = Field(
        default=None,
        description="backbone blocks QAT trains; null: `model.freeze.trainable_last` (the schedule is "
        "finetune's)",
        examples=[8], json_schema_extra={"doc_type": "int >= 0, `all`, or null"},
    )
    freeze_bn_epoch: int = Field(
        default=0, ge=0,
        description="BatchNorm statistics freeze from this epoch (0 keeps the fine-tuned statistics, as "
        "every published recipe does)",
        examples=[1],
    )
    freeze_observer_epoch: int | None = Field(
        default=None, ge=0,
        description="quantization ranges freeze from this epoch; null: min(2, epochs - 1), which any epoch "
        "count reaches; a set epoch >= `epochs` is a warning",
        examples=[1],
    )
    calibration_batches: int = Field(
        default=16, ge=0, description="observer warm-up batches before training", examples=[32]
    )
    numerics: Literal["s7", "s8", "u8u8"] = Field(
        default="s7",
        description="the integers the INT8 model computes: `s7` trains 7-bit weights ([-64, 63]), exact on "
        "every x86 and ARM kernel; `s8` trains 8-bit weights, which x86 CPUs without VNNI (AVX2) compute "
        "wrongly (`vpmaddubsw` saturates); `u8u8` trains `s8` and writes its weights as uint8 (+128, zero "
        "point 128) so ONNX Runtime runs its U8U8 kernels; measured per target in "
        "[docs/targets.md](targets.md)",
        examples=["s8"],
    )
    patience: int = Field(default=5, ge=1, description="early stopping on fake-quant val top-1", examples=[2])
    max_batches_per_epoch: int | None = Field(
        default=None, ge=1, description="cap an epoch's batches; null: every batch", examples=[150]
    )

    @field_validator("trainable_last", mode="before")
    @classmethod
    def _trainable(cls, v: object) -> object:
        return v if v is None else _check_trainable(v)


class ExportConfig(_Strict):
    opset: int = Field(default=17, ge=13, le=21, description="ONNX opset", examples=[18])
    min_agreement: float = Field(
        default=0.99, ge=0, le=1,
        description="required ONNX Runtime vs torch top-1 agreement on the test split, and on each target's "
        "sample (`targets`)",
        examples=[0.98],
    )
    openvino: bool = Field(default=True, description="also convert to OpenVINO IR", examples=[False])
    float_layers: Literal["auto"] | tuple[str, ...] = Field(
        default=(),
        description="convolutions of `int8.onnx` kept in float for ONNX Runtime (mixed precision); `auto`: "
        "each conv is timed alone as int8 and as float on this CPU and those clearly faster in float are "
        "kept (on the AMD EPYC Zen 5: the depthwise convs whose width is not a multiple of 16, which MLAS's "
        "fast int8 depthwise kernel cannot take); the choice and the profile go in the export manifest "
        "(`float_layers`); the model then asks ORT (metadata) to disable `WeightBiasQuantization`, which our "
        "loaders honour",
        examples=["auto"], json_schema_extra={"doc_type": "`auto` or list of Conv node names"},
    )
    openvino_qdq: str = Field(
        default="onnxruntime",
        description="Q/DQ placement of the INT8 IR: `onnxruntime` converts `int8.onnx` as is; `openvino` "
        "re-exports the same QAT model with no Q/DQ between a convolution and its HardSwish (OpenVINO fuses "
        "it as a post-op) and the squeeze-excite branch in float, as NNCF places them (see docs/int8.md); "
        "a runtime of the runtime registry with a Q/DQ placement, checked when a build starts",
        examples=["openvino"],
    )
    target_images: int = Field(
        default=500,
        ge=0,
        description="test images (a seeded sample) `int8.onnx` runs on each target's own kernels; emulation "
        "is slow; `0`: no target checks",
        examples=[500],
    )
    pad_channels: Literal[0, 8, 16, 32] = Field(
        default=16,
        description="depthwise widths of `int8.onnx` padded with zero channels to a multiple of this (and "
        "the convs around them: expand, projection, squeeze-excite FCs), so ONNX Runtime runs them on MLAS's "
        "fast int8 depthwise kernel (it needs a multiple of 16); the same function bit for bit, the padding "
        "recorded in the model's metadata and the export manifest (`padded_channels`) and left out of the "
        "MAC and parameter counts; the IR is exported unpadded; `0`: off",
        examples=[0],
    )

class PtqConfig(_Strict):
    method: Literal["ort", "nncf"] = Field(
        default="ort",
        description="`ort`: ONNX Runtime `quantize_static` (QDQ ONNX, run by both runtimes); `nncf`: NNCF's "
        "`nncf.quantize` on the FP32 ONNX (for ONNX Runtime) and on the OpenVINO model (an IR for "
        "OpenVINO); needs `pip install 'edgepipe[nncf]'`",
        examples=["nncf"],
    )
    calibration: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="calibration method (`ort` only)", examples=["percentile"]
    )
    calibration_images: int = Field(
        default=256, ge=1, description="train images used to calibrate", examples=[512]
    )

    @model_validator(mode="after")
    def _calibration_is_ort_only(self) -> PtqConfig:
        if self.method == "nncf" and "calibration" in self.model_fields_set:
            raise ValueError(
                "calibration is an ONNX Runtime option; NNCF calibrates with its own statistics; "
                "fix: remove ptq.calibration or set ptq.method: ort"
            )
        return self


# --fail-if metrics that only the `edgepipe bench` command measures, and why
_NOT_IN_BENCH_STAGE = {
    "agreement": "it needs --reference; export records agreement and fails below export.min_agreement",
    "macro_f1": "use edgepipe bench --data",
    "peak_mb": "use edgepipe bench",
}


class BenchConfig(_Strict):
    threads: int = Field(default=2, ge=1, le=256, description="inference threads", examples=[4])
    batch_size: int = Field(default=1, ge=1, le=1024, description="batch size timed", examples=[8])
    warmup: int = Field(default=20, ge=0, description="untimed warm-up runs", examples=[50])
    min_iters: int = Field(default=100, ge=1, description="at least this many timed runs", examples=[200])
    min_seconds: float = Field(default=2.0, ge=0, description="and at least this long", examples=[5])
    paired_rounds: int = Field(
        default=15,
        ge=0,
        le=500,
        description="after each row's own timing, every row is timed again in this many alternating rounds "
        "(each warmed up again in its turn, then at least 20 calls and 0.05 s) and each speed-up is also "
        "given paired per round (`speedup_paired`: the ratio within each round, median over rounds, with "
        "its interquartile range `speedup_paired_iqr`), which drift of a shared machine cancels; `0`: off",
        examples=[40],
    )
    runtimes: tuple[str, ...] = Field(
        default=("onnxruntime", "openvino"),
        description="runtimes to time (those of the runtime registry that run an export output); checked "
        "when a build starts",
        examples=[["onnxruntime"]],
    )
    devices: tuple[str, ...] = Field(
        default=(),
        description="real devices every `.onnx` (fp32, int8-qat, int8-ptq) is also benched on over SSH, as "
        "`edgepipe bench --on`: batch-1 cold/p50/p90/p99, peak RSS, paired speed-up vs fp32, top-1 and "
        "agreement with the same model on ONNX Runtime here, on `device_images` test images; the rows go "
        "into the run report's `targets` (`how: device`) and its \"On devices\" table; an unreachable device "
        "fails the stage with one line ([docs/device_bench.md](device_bench.md))",
        examples=[["ssh://pi@192.168.1.50"]],
        json_schema_extra={"doc_type": "list of `ssh://[USER@]HOST[:PORT]` (or `ssh://ALIAS`, an ssh-config "
                           "Host; `?python=PATH` picks the device's python)"},
    )
    device_images: int = Field(
        default=500, ge=1,
        description="at most this many test images (a seeded subset) are copied to each device",
        examples=[200],
    )
    device_timeout_s: float = Field(
        default=900.0, gt=0,
        description="one device's whole run (all models, timing and accuracy) may take this long, then it is "
        "stopped and the stage fails",
        examples=[1800],
    )
    max_top1_drop: float = Field(
        default=0.5, ge=0, le=100,
        description="\"Which to ship\" (the report's closing section and `edgepipe bench`'s): per runtime, "
        "the fastest model whose top-1 is within this many points of the best float model's on that runtime",
        examples=[1.0],
    )
    fail_if: tuple[str, ...] = Field(
        default=(),
        description="`edgepipe bench --fail-if` gates, checked on every bench row with fp32 as the baseline "
        "(`acc_drop`, `speedup`); a failed gate fails the stage (exit 8) naming the gate, model, runtime and "
        "value. Metrics: as `--fail-if`, except `agreement`, `macro_f1`, `peak_mb` (the stage does not "
        "measure them)",
        examples=[["size_mb>100", "acc_drop>1"]],
        json_schema_extra={"doc_type": "list of gates `METRIC OP NUMBER`"},
    )

    @field_validator("devices")
    @classmethod
    def _devices(cls, devices: tuple[str, ...]) -> tuple[str, ...]:
        from edgepipe.errors import DeviceError
        from edgepipe.targets.ssh import parse_device

        for spec in devices:
            try:
                parse_device(spec)
            except DeviceError as exc:
                raise ValueError(str(exc)) from None
        return devices

    @field_validator("fail_if")
    @classmethod
    def _gates(cls, gates: tuple[str, ...]) -> tuple[str, ...]:
        from edgepipe.errors import BenchInputError
        from edgepipe.gates import METRICS, parse_gate

        for text in gates:
            try:
                gate = parse_gate(text)
            except BenchInputError as exc:
                raise ValueError(str(exc).replace("--fail-if", "fail_if:")) from None
            if gate.metric in _NOT_IN_BENCH_STAGE:
                usable = ", ".join(m for m in METRICS if m not in _NOT_IN_BENCH_STAGE)
                raise ValueError(
                    f"gate '{text}': the bench stage does not measure {gate.metric} "
                    f"({_NOT_IN_BENCH_STAGE[gate.metric]}); fix: use one of {usable}"
                )
        return gates


class ExplainConfig(_Strict):
    """The explain stage: a Grad-CAM grid of test images, FP32 and QAT side by side (stages/explain.py)."""

    method: str = Field(
        default="gradcam", description="CAM method (as `edgepipe explain --method`)", examples=["gradcam++"],
        json_schema_extra={"doc_type": ", ".join(f"`{m}`" for m in CAM_METHODS)},
    )
    per_class: int = Field(
        default=1, ge=1, le=5, description="right and wrong images shown per class (rows per class)",
        examples=[2],
    )
    images: int | None = Field(
        default=1000, ge=10,
        description="test images the FP32 model scores to pick from (a sample seeded by `seed`); null: the "
        "whole test split",
        examples=[None],
    )
    layer: str | None = Field(
        default=None,
        description="module to explain; null: the arch's `cam_layer` (as `edgepipe explain`), or, when its "
        "map is under 4x4 at this input size (MobileNetV3 at 32 px: 1x1), the deepest earlier block with a "
        "4x4 map",
        examples=["features.12"], json_schema_extra={"doc_type": "module name or null"},
    )

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in CAM_METHODS:
            raise ValueError(f"{v!r} is not one of {', '.join(CAM_METHODS)}")
        return v


class Recipe(_Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="run folder under `--out`", examples=["my_photos_mnv3"]
    )
    seed: int = Field(
        default=0, description="seeds the split, weight init, shuffling and sampling", examples=[1]
    )
    stages: tuple[str, ...] | None = Field(
        default=None,
        description="stages to run (`split` always runs); null: all six; checked when a build starts",
        examples=[["finetune", "qat"]],
        json_schema_extra={"doc_type": "list of `finetune qat explain export ptq bench`, or null"},
    )
    targets: tuple[str, ...] | None = Field(
        default=None,
        description="CPUs `int8.onnx` must be right on: export runs it on each one's own ONNX Runtime "
        "kernels (natively, or emulated by qemu-user: numerics only) and gates each on "
        "`export.min_agreement`; a target this machine cannot check is reported \"not checked\" with the "
        "reason, never passed ([docs/targets.md](targets.md)). null: `host` plus every target this machine "
        "can check (not the host's own family twice)",
        examples=[["host", "x86-64-v3", "cortex-a76"]],
        json_schema_extra={"doc_type": f"list of `{' '.join(TARGET_NAMES)}`, or null"},
    )
    data: DataConfig
    model: ModelConfig = ModelConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    qat: QatConfig = QatConfig()
    export: ExportConfig = ExportConfig()
    ptq: PtqConfig = PtqConfig()
    bench: BenchConfig = BenchConfig()
    explain: ExplainConfig = ExplainConfig()

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in v or ():
            if name not in TARGET_NAMES:
                near = difflib.get_close_matches(name, TARGET_NAMES, n=1)
                hint = f"did you mean '{near[0]}'?" if near else f"use one of {', '.join(TARGET_NAMES)}"
                raise ValueError(f"unknown target {name!r}; {hint}")
        if v is not None and not v:
            raise ValueError("an empty list checks nothing; fix: name at least one target or remove the key")
        return v

    @model_validator(mode="after")
    def _ordered_stages(self) -> Recipe:
        if self.stages is not None and len(set(self.stages)) != len(self.stages):
            raise ValueError("stages lists a stage twice")
        return self


_OPS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Names a user could have meant at ``loc`` (for 'did you mean')."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        # an optional section (``AffineConfig | None``) suggests the section's own keys
        models = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        ann = models[0] if models else None
        if ann is None:
            return list(model.model_fields)
        model = ann
    return list(model.model_fields)


def _describe(err: dict, root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "<recipe>"
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        known = _fields_at(root, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"known keys: {', '.join(known)}"
        return f"{path}: unknown key; {hint}"
    if kind in _OPS:
        bound = next(iter(ctx.values()))
        return f"{path}: must be {_OPS[kind]} {bound} (got {err['input']!r})"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "literal_error":
        return f"{path}: {err['input']!r} is not one of {ctx.get('expected')}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {msg} (got {err['input']!r})" if kind != "value_error" else f"{path}: {msg}"


def parse_recipe(raw: object, source: str = "<recipe>") -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping of keys; see recipes/smoke.yaml")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        errors = [_describe(e, Recipe) for e in exc.errors()]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(f"{source}: {errors[0]}{more}") from None


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    """Read and validate a recipe (relative data.root paths are relative to the working directory)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}; fix: give the path of a YAML recipe (see recipes/)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if isinstance(raw, dict) and overrides:
        raw = {**raw, **overrides}
    return parse_recipe(raw, str(path))
