"""The architecture options of ``model.*`` beyond the backbone's name, as one record the builders take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ViTBlocks:
    """``model.hybrid: vit``: the encoder after layer 4 (ViT-tiny's shape by default) and the input size,
    which sets the token grid its learned positions cover."""

    depth: int = 1
    width: int = 192
    heads: int = 3
    mlp_ratio: float = 4.0
    weights: str | None = None
    image_size: int = 224
    pool: str = "avg"


@dataclass(frozen=True)
class Variant:
    """Attention and fusion for a registry builder (the head is swapped by models/build.py for every arch).

    ``attention`` None keeps the backbone's own (squeeze-excite in MobileNetV3, none in ResNets)."""

    attention: str | None = None
    eca_kernel: int | None = None
    cbam_reduction: int = 16
    cbam_kernel: int = 7
    fusion: str = "none"
    blocks: str = "standard"  # model.variant: the block table (MobileNetV3: standard | minimalistic)
    vit: ViTBlocks | None = None  # model.hybrid: vit

    @property
    def is_plain(self) -> bool:
        plain_blocks = self.blocks == "standard" and self.vit is None
        return self.attention is None and self.fusion == "none" and plain_blocks

    def attention_kwargs(self) -> dict[str, Any]:
        return {
            "eca_kernel_size": self.eca_kernel,
            "cbam_reduction": self.cbam_reduction,
            "cbam_kernel": self.cbam_kernel,
        }

    @classmethod
    def from_config(cls, cfg: Any, image_size: int = 224) -> Variant:
        vit = None
        if getattr(cfg, "hybrid", "none") == "vit":
            vit = ViTBlocks(
                cfg.vit_depth, cfg.vit_width, cfg.vit_heads, cfg.vit_mlp_ratio, cfg.vit_weights, image_size,
                cfg.vit_pool,
            )
        return cls(
            cfg.attention, cfg.eca_kernel, cfg.cbam_reduction, cfg.cbam_kernel, cfg.fusion, cfg.variant, vit
        )


def fresh_modules(model: Any) -> list[str]:
    """Names of the modules a variant added (attention, fusion, cosine head): no pretrained weights."""
    return [name for name, m in model.named_modules() if name and getattr(m, "edgepipe_fresh", False)]
