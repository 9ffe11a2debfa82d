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

from edgepipe.errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AffineConfig(_Strict):
    """Random translation, scaling and shear (v2.RandomAffine); ``rotation`` stays its own key."""

    translate: float = Field(default=0.0, ge=0, le=1, description="max shift, fraction of width/height")
    scale: tuple[float, float] | None = Field(default=None, description="[low, high] zoom range; null: none")
    shear: float = Field(default=0.0, ge=0, lt=90, description="max shear along x, degrees")

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

    distortion_scale: float = Field(gt=0, le=1, description="how far corners may move, 0..1")
    p: float = Field(default=0.5, gt=0, le=1, description="probability an image is warped")


class RandomCropConfig(_Strict):
    """A plain random crop (v2.RandomCrop) of image_size from the image resized to image_size / crop_pct,
    optionally padded first: shifts the content without rescaling it, unlike RandomResizedCrop."""

    padding: int = Field(default=0, ge=0, le=512, description="pixels added on each side before cropping")
    padding_mode: Literal["constant", "edge", "reflect"] = Field(
        default="constant", description="constant pads with black"
    )


class AugmentConfig(_Strict):
    """Training-time augmentation (torchvision.transforms.v2); evaluation never augments."""

    hflip: bool = True
    rrc_scale: tuple[float, float] | None = Field(
        default=(0.8, 1.0), description="RandomResizedCrop scale range; null keeps resize + center crop"
    )
    rotation: float = Field(default=0.0, ge=0, le=180, description="max rotation in degrees")
    color_jitter: float = Field(default=0.0, ge=0, le=1, description="brightness/contrast/saturation")
    random_erasing: float = Field(default=0.0, ge=0, le=1, description="probability")
    affine: AffineConfig | None = Field(default=None, description="translate/scale/shear; null: none")
    perspective: PerspectiveConfig | None = Field(default=None, description="null: none")
    random_crop: RandomCropConfig | None = Field(
        default=None, description="plain random crop (+ padding) instead of the centre crop; rrc_scale: null"
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
    dataset: str | None = Field(default=None, description="a built-in dataset name, e.g. fashion-mnist")
    root: Path | None = Field(default=None, description="an ImageFolder: one sub-folder of images per class")
    image_size: int = Field(default=224, ge=16, le=1024)
    crop_pct: float = Field(default=0.875, gt=0, le=1, description="eval: resize to size/crop_pct, crop")
    mean: tuple[float, float, float] | None = Field(
        default=None, description="normalisation mean on [0, 1] pixels; null: the model's registry entry"
    )
    std: tuple[float, float, float] | None = Field(
        default=None, description="normalisation std on [0, 1] pixels; null: the model's (its registry entry)"
    )
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="used only without a test split")
    limit_per_class: int | None = Field(default=None, ge=1, description="subsample each class (smoke runs)")
    batch_size: int = Field(default=64, ge=1, le=4096)
    num_workers: int = Field(default=0, ge=0, le=64)
    augment: AugmentConfig = AugmentConfig()
    sampler: Literal["shuffle", "balanced"] = Field(
        default="shuffle",
        description="balanced: draw train images with probability 1/class size (imbalanced sets)",
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
        default="all", description="backbone blocks trained, counted from the head; 0 trains the head only"
    )
    schedule: dict[int, int | Literal["all"]] = Field(
        default_factory=dict,
        description="gradual unfreezing: {epoch: trainable_last from that epoch}; epochs count from 0",
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
    arch: str = "mobilenet_v3_large"
    pretrained: str = Field(default="none", description="imagenet | none | PATH to a state dict")
    width_mult: float = Field(
        default=1.0, gt=0, le=2, description="MobileNetV3 width (1.0 for ImageNet weights)"
    )
    dropout: float = Field(default=0.2, ge=0, lt=1)
    bn_momentum: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="override BatchNorm momentum (MobileNetV3 uses 0.01: too slow for a few hundred steps)",
    )
    freeze: FreezeConfig = FreezeConfig()
    attention: Literal["se", "eca", "cbam", "none"] | None = Field(
        default=None,
        description="replaces MobileNetV3's squeeze-excite, or is added to each ResNet bottleneck; "
        "null: the arch's own (se in MobileNetV3, none in ResNets)",
    )
    eca_kernel: int | None = Field(default=None, ge=1, le=15, description="eca: odd conv size; null: ECA's")
    cbam_reduction: int = Field(default=16, ge=1, le=256, description="cbam: channel-MLP reduction ratio")
    cbam_kernel: int = Field(default=7, ge=1, le=15, description="cbam: odd spatial conv size")
    variant: Literal["standard", "minimalistic"] = Field(
        default="standard",
        description="MobileNetV3 block table; minimalistic: no squeeze-excite, ReLU for h-swish, 3x3 "
        "depthwise (the paper's INT8- and accelerator-friendly model)",
    )
    fusion: Literal["none", "multiscale"] = Field(
        default="none", description="multiscale: pooled 1/8, 1/16, last features concatenated (MobileNetV3)"
    )
    head: Literal["linear", "arcmargin"] = Field(
        default="linear", description="arcmargin: cosine logits, angular margin in training (ArcFace)"
    )
    arc_scale: float = Field(default=30.0, gt=0, le=128, description="arcmargin: logit scale s")
    arc_margin: float = Field(default=0.5, ge=0, le=1.5, description="arcmargin: angular margin m (radians)")
    hybrid: Literal["none", "vit"] = Field(
        default="none",
        description="vit: layer-4 features as tokens through ViT encoder blocks, class token into the "
        "head (resnet50, resnext50_32x4d); docs/hybrid.md",
    )
    vit_depth: int = Field(default=1, ge=1, le=12, description="vit: encoder blocks")
    vit_width: int = Field(default=192, ge=8, le=1024, description="vit: token width (ViT-tiny 192)")
    vit_heads: int = Field(default=3, ge=1, le=16, description="vit: attention heads (ViT-tiny 3)")
    vit_mlp_ratio: float = Field(
        default=4.0, gt=0, le=8, description="vit: MLP width / token width (ViT-tiny 768/192)"
    )
    vit_pool: Literal["avg", "token"] = Field(
        default="avg",
        description="vit: the head's input: avg, the mean of the spatial tokens (timm global_pool avg); "
        "token, the class token",
    )
    vit_weights: str | None = Field(
        default=None,
        description="vit: a local timm or Hugging Face ViT checkpoint file (.safetensors, .pth, .bin) for "
        "the blocks; null: initialisation",
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

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd only")
    nesterov: bool = Field(default=False, description="sgd only; needs momentum > 0")
    scheduler: Literal["cosine", "step", "plateau", "cosine_restarts"] = Field(
        default="cosine", description="after warmup_epochs of linear warm-up"
    )
    step_size: int = Field(default=10, ge=1, description="step: epochs between decays")
    gamma: float = Field(default=0.1, gt=0, le=1, description="step: lr factor at each decay")
    plateau_patience: int = Field(default=2, ge=0, description="plateau: epochs without val top-1 gain")
    plateau_factor: float = Field(default=0.1, gt=0, lt=1, description="plateau: lr factor on a plateau")
    t0_epochs: int = Field(default=10, ge=1, description="cosine_restarts: epochs of the first cycle")
    t_mult: int = Field(default=1, ge=1, le=10, description="cosine_restarts: cycle length factor")
    loss: Literal["ce", "focal"] = "ce"
    focal_gamma: float = Field(default=2.0, ge=0, le=10, description="focal: (1 - p)^gamma down-weighting")
    class_weights: Literal["none", "balanced"] = Field(
        default="none", description="balanced: weight each class by n / (classes * class size) in train"
    )
    grad_clip_norm: float | None = Field(default=None, gt=0, description="clip the global gradient norm")
    channels_last: Literal["auto", "on", "off"] = Field(
        default="auto", description="NHWC tensors; auto: timed at the start of training (train/autotune.py)"
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="torch.compile the model; auto: if timed faster, its compile time paid"
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
    epochs: int = Field(default=10, ge=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    warmup_epochs: int = Field(default=0, ge=0)
    patience: int = Field(default=5, ge=1, description="early stopping on val top-1")
    amp: Literal["auto", "on", "off", "bf16"] = Field(
        default="auto",
        description="auto: float16 autocast + GradScaler with CUDA; on a CPU bf16 autocast if timed faster "
        "(native bf16 only), else float32; on: float16, CUDA only; bf16: bfloat16 autocast on any device "
        "(QAT always trains in float32)",
    )
    max_batches_per_epoch: int | None = Field(default=None, ge=1)

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_switch(cls, v: object) -> object:
        return _on_off(v)


class QatConfig(_TrainOptions):
    epochs: int = Field(default=3, ge=0)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    warmup_epochs: int = Field(default=0, ge=0)
    trainable_last: int | Literal["all"] | None = Field(
        default=None, description="backbone blocks trained in QAT; null: model.freeze.trainable_last"
    )
    freeze_bn_epoch: int = Field(
        default=0, ge=0, description="BatchNorm statistics freeze from this epoch (0: keep the fine-tuned)"
    )
    freeze_observer_epoch: int | None = Field(
        default=None, ge=0, description="quant ranges freeze from this epoch; null: min(2, epochs - 1)"
    )
    calibration_batches: int = Field(default=16, ge=0, description="observer warm-up before training")
    numerics: Literal["s7", "s8", "u8u8"] = Field(
        default="s7",
        description="INT8 numerics the targets' kernels compute: s7 (7-bit weights: exact on every x86 and "
        "ARM kernel), s8 (8-bit weights: saturates on x86 without VNNI), u8u8 (s8 written as uint8 weights "
        "for ONNX Runtime's U8U8 kernels); see docs/targets.md",
    )
    patience: int = Field(default=5, ge=1)
    max_batches_per_epoch: int | None = Field(default=None, ge=1)

    @field_validator("trainable_last", mode="before")
    @classmethod
    def _trainable(cls, v: object) -> object:
        return v if v is None else _check_trainable(v)


class ExportConfig(_Strict):
    opset: int = Field(default=17, ge=13, le=21)
    min_agreement: float = Field(default=0.99, ge=0, le=1, description="ORT vs torch top-1 agreement")
    openvino: bool = True
    float_layers: Literal["auto"] | tuple[str, ...] = Field(
        default=(),
        description="Conv nodes int8.onnx keeps in float for ONNX Runtime; auto: those measured faster",
    )
    openvino_qdq: str = Field(
        default="onnxruntime",
        description="Q/DQ placement of the INT8 IR: a runtime's (onnxruntime: int8.onnx's; openvino: "
        "HardSwish fused, SE float); checked against the runtime registry when a build starts",
    )
    target_images: int = Field(
        default=500,
        ge=0,
        description="test images int8.onnx runs on each target's own kernels (emulated ones are slow); "
        "0: no target checks",
    )
    pad_channels: Literal[0, 8, 16, 32] = Field(
        default=16,
        description="int8.onnx: depthwise widths padded with zero channels to a multiple of this, onto ONNX "
        "Runtime's fast int8 depthwise kernel (0: off); the IR is not padded",
    )


class PtqConfig(_Strict):
    method: Literal["ort", "nncf"] = Field(
        default="ort", description="ort: onnxruntime quantize_static; nncf: nncf.quantize (pip extra nncf)"
    )
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_images: int = Field(default=256, ge=1)

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
    threads: int = Field(default=2, ge=1, le=256)
    batch_size: int = Field(default=1, ge=1, le=1024)
    warmup: int = Field(default=20, ge=0)
    min_iters: int = Field(default=100, ge=1)
    min_seconds: float = Field(default=2.0, ge=0)
    paired_rounds: int = Field(
        default=15,
        ge=0,
        le=500,
        description="after each row's own timing, every row timed again in this many alternating rounds; "
        "speed-ups are also given paired per round (speedup_paired, with its interquartile range): machine "
        "drift cancels; 0: off",
    )
    runtimes: tuple[str, ...] = Field(
        default=("onnxruntime", "openvino"),
        description="runtimes to time (those of the runtime registry that run an export output); checked "
        "when a build starts",
    )
    devices: tuple[str, ...] = Field(
        default=(),
        description="ssh://[USER@]HOST[:PORT] devices (or ssh-config aliases) every .onnx is also benched "
        "on; their rows go into the run report's targets (docs/device_bench.md)",
    )
    device_images: int = Field(default=500, ge=1, description="at most this many test images go to a device")
    device_timeout_s: float = Field(default=900.0, gt=0, description="one device's whole run may take this")
    max_top1_drop: float = Field(
        default=0.5, ge=0, le=100,
        description="'which to ship': the fastest model within this many top-1 points of the best float",
    )
    fail_if: tuple[str, ...] = Field(
        default=(),
        description="edgepipe bench --fail-if gates (e.g. size_mb>100) checked on every row; baseline: fp32",
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

    method: str = Field(default="gradcam", description="a CAM method of edgepipe explain --method")
    per_class: int = Field(default=1, ge=1, le=5, description="most confident correct and wrong per class")
    images: int | None = Field(
        default=1000, ge=10, description="test images scored to pick from (seeded sample); null: all"
    )
    layer: str | None = Field(
        default=None, description="module to explain; null: the arch's, or an earlier block if its map < 4x4"
    )

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        from edgepipe.constants import CAM_METHODS as METHODS

        if v not in METHODS:
            raise ValueError(f"{v!r} is not one of {', '.join(METHODS)}")
        return v


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="run folder name under --out")
    seed: int = 0
    stages: tuple[str, ...] | None = Field(
        default=None, description="stages to run (split always runs); null: all; checked when a build starts"
    )
    targets: tuple[str, ...] | None = Field(
        default=None,
        description="CPUs the INT8 model must be right on (host, x86-64-v3, x86-64-v4, cortex-a72, "
        "cortex-a76), each checked on its own kernels; null: the host and every target it can check",
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
        from edgepipe.constants import TARGET_NAMES

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
