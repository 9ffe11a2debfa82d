"""The preprocessing a model expects (after timm's resolve_data_config): one typed record, built here only.

Stored as ``to_dict()`` in checkpoints and ONNX metadata_props (and so in OpenVINO IR rt_info, which the IR
converter copies from the ONNX metadata); export, ptq, bench and predict read it back with ``from_dict``
rather than retyping sizes or mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgepipe.constants import IMAGENET_MEAN, IMAGENET_STD
from edgepipe.errors import ModelError
from edgepipe.recipe import DataConfig

Triple = tuple[float, float, float]
_FIXED = {"color": "RGB", "layout": "NCHW", "scale": "x/255 then (x-mean)/std"}
_KEYS = ("input_size", "resize", "crop", "mean", "std")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize`` (``interpolation``), centre-crop ``crop``, scale RGB pixels to
    [0, 1], normalise (x - mean) / std; the model takes NCHW float32 of ``input_size`` (C, H, W)."""

    input_size: tuple[int, int, int]
    resize: int
    crop: int
    mean: Triple
    std: Triple
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if len(self.input_size) != 3 or len(self.mean) != 3 or len(self.std) != 3:
            raise ModelError(
                f"preprocessing needs input_size (C, H, W) and three mean/std values (got {self}); fix: "
                "give RGB statistics and a 3-d input size"
            )
        if not 1 <= self.crop <= self.resize:
            raise ModelError(
                f"preprocessing crops {self.crop} pixels from a {self.resize}-pixel resize; fix: resize >= "
                "crop >= 1"
            )

    @classmethod
    def make(
        cls,
        image_size: int,
        resize: int | None = None,
        mean: Triple | list[float] | None = None,
        std: Triple | list[float] | None = None,
    ) -> Preprocessing:
        """Square input of ``image_size``; ``resize`` defaults to no crop margin, mean/std to ImageNet's."""
        return cls(
            input_size=(3, image_size, image_size),
            resize=resize if resize is not None else image_size,
            crop=image_size,
            mean=tuple(mean if mean is not None else IMAGENET_MEAN),  # type: ignore[arg-type]
            std=tuple(std if std is not None else IMAGENET_STD),  # type: ignore[arg-type]
        )

    @classmethod
    def for_model(cls, arch: str, data: DataConfig) -> Preprocessing:
        """What a recipe trains ``arch`` with: its data keys, and mean/std from the recipe when it sets them,
        else from the registry entry (the statistics the pretrained weights expect, e.g. (x - 127) / 128 for
        EfficientNet-Lite0)."""
        from edgepipe.models.registry import get_spec

        spec = get_spec(arch)
        return cls.make(
            data.image_size,
            resize=int(round(data.image_size / data.crop_pct)),
            mean=data.mean if data.mean is not None else spec.mean,
            std=data.std if data.std is not None else spec.std,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with a model (keys as in every edgepipe artifact so far)."""
        return {
            "input_size": list(self.input_size),
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            **_FIXED,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Preprocessing:
        """Read a stored record back; a missing key is an error naming it (the model must be re-exported)."""
        missing = [k for k in _KEYS if not isinstance(d, dict) or k not in d]
        if missing:
            raise ModelError(
                f"the model's preprocessing record lacks {', '.join(missing)}; fix: re-export the model "
                "with this edgepipe (or give its preprocessing by flags)"
            )
        try:
            return cls(
                input_size=tuple(int(v) for v in d["input_size"]),  # type: ignore[arg-type]
                resize=int(d["resize"]),
                crop=int(d["crop"]),
                mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
                interpolation=str(d.get("interpolation", "bilinear")),
            )
        except (TypeError, ValueError, KeyError):
            raise ModelError(
                f"the model's preprocessing record is malformed ({d!r:.160}); fix: re-export the model"
            ) from None
