"""The architecture options of ``model.*`` beyond the backbone's name, as one record the builders take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

    @property
    def is_plain(self) -> bool:
        return self.attention is None and self.fusion == "none" and self.blocks == "standard"

    def attention_kwargs(self) -> dict[str, Any]:
        return {
            "eca_kernel_size": self.eca_kernel,
            "cbam_reduction": self.cbam_reduction,
            "cbam_kernel": self.cbam_kernel,
        }

    @classmethod
    def from_config(cls, cfg: Any) -> Variant:
        return cls(
            cfg.attention, cfg.eca_kernel, cfg.cbam_reduction, cfg.cbam_kernel, cfg.fusion, cfg.variant
        )


def fresh_modules(model: Any) -> list[str]:
    """Names of the modules a variant added (attention, fusion, cosine head): no pretrained weights."""
    return [name for name, m in model.named_modules() if name and getattr(m, "edgepipe_fresh", False)]
