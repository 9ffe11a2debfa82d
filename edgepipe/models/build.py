"""Build a model for a dataset (backbone + pretrained weights + a new head); rebuild one from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgepipe.errors import ModelError
from edgepipe.models.registry import ModelSpec, get_spec
from edgepipe.models.variant import Variant, fresh_modules
from edgepipe.recipe import ModelConfig

log = logging.getLogger(__name__)


def _replace_head(model: Any, spec: ModelSpec, num_classes: int, cfg: ModelConfig) -> None:
    import torch.nn as nn

    parent, attr = spec.head(model)
    old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    if cfg.head == "arcmargin":
        from edgepipe.models.heads import CosineHead

        new = CosineHead(old.in_features, num_classes, cfg.arc_scale)
    else:
        new = nn.Linear(old.in_features, num_classes)
    if attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def imagenet_state_dict(spec: ModelSpec) -> dict:
    """torchvision's ImageNet weights from the torch hub cache, or downloaded when online; or the spec's own
    ``load_weights`` for weights torchvision does not ship.

    Offline and absent -> one line naming the exact file and where to put it.
    """
    import torch
    import torchvision.models as tvm

    if spec.load_weights is not None:
        return spec.load_weights()
    if spec.weights is None:
        raise ModelError(
            f"model.arch '{spec.name}' has no ImageNet weights; fix: set model.pretrained: none or PATH"
        )
    enum_name, member = spec.weights.split(".")
    weights = getattr(getattr(tvm, enum_name), member)
    filename = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # noqa: BLE001 - a failed download (offline) has a single fix
        raise ModelError(
            f"ImageNet weights for {spec.name} are not cached and could not be downloaded "
            f"({type(exc).__name__}); fix: place {filename} (from {weights.url}) at {cached}, "
            "or set model.pretrained to a local state-dict path, or to none"
        ) from None


def _load_pretrained(model: Any, spec: ModelSpec, cfg: ModelConfig) -> str:

    if cfg.pretrained == "none":
        return "none"
    if cfg.pretrained == "imagenet":
        if cfg.width_mult != 1.0:
            raise ModelError(
                "model.pretrained: imagenet needs model.width_mult: 1.0; fix: set width_mult to 1.0"
            )
        state = imagenet_state_dict(spec)
        source = spec.weights or "imagenet"
    else:
        path = Path(cfg.pretrained).expanduser()
        if not path.is_file():
            raise ModelError(
                f"model.pretrained: file not found: {path}; fix: give a state-dict path, imagenet or none"
            )
        from edgepipe.models.checkpoint import safe_load

        try:
            state = safe_load(path)
        except ModelError as exc:
            raise ModelError(
                f"model.pretrained: {exc.args[0].split(';')[0]}; fix: save it with "
                "torch.save(model.state_dict(), path)"
            ) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        source = str(path)
    own = model.state_dict()
    # The head is new (dataset classes), and so are a variant's modules (attention, fusion): keep only tensors
    # whose names and shapes match; the fresh modules keep their initialisation.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    fresh = tuple(f"{name}." for name in fresh_modules(model))
    new_keys = [k for k in missing if k.startswith(fresh)]
    body_missing = [
        k for k in missing if not k.startswith(("classifier", "fc.")) and k not in new_keys
    ]
    if len(usable) == 0 or len(body_missing) > 0.5 * len(own):
        raise ModelError(
            f"model.pretrained {source} does not fit {spec.name} "
            f"({len(usable)} of {len(own)} tensors match); "
            "fix: give weights saved from the same architecture"
        )
    model.load_state_dict(usable, strict=False)
    log.info(
        "loaded %d/%d tensors from %s (%d left at init: new head)",
        len(usable),
        len(own),
        source,
        len(missing) - len(new_keys),
    )
    if new_keys or cfg.attention not in (None, "se"):
        unused = [k for k in state if k not in usable and not k.startswith(("classifier", "fc."))]
        log.info(
            "variant (attention %s, fusion %s): %d new tensors in %d new modules start fresh, e.g. %s; "
            "%d pretrained tensors have no place in it (e.g. the squeeze-excite it replaces)",
            cfg.attention or "the arch's own",
            cfg.fusion,
            len(new_keys),
            len(fresh),
            ", ".join(f.rstrip(".") for f in fresh[:3]) or "-",
            len(unused),
        )
    return source


def build_model(
    cfg: ModelConfig, num_classes: int, quantizable: bool = False, image_size: int = 224
) -> tuple[Any, str]:
    """A backbone with a ``num_classes`` head and its pretrained weights; returns (model, weights source).

    ``image_size`` is the input side; the ViT hybrid's learned positions cover its layer-4 grid."""
    spec = get_spec(cfg.arch)
    kwargs: dict[str, Any] = {"dropout": cfg.dropout}
    if spec.supports_width:
        kwargs["width_mult"] = cfg.width_mult
    elif cfg.width_mult != 1.0:
        raise ModelError(f"model.width_mult is not supported by {cfg.arch}; fix: remove it or set it to 1.0")
    variant = Variant.from_config(cfg, image_size)
    if not variant.is_plain:  # ModelConfig has checked that the arch offers it
        kwargs["variant"] = variant
    builder = spec.build_quantizable if quantizable else spec.build
    if builder is None:
        raise ModelError(f"{cfg.arch} has no quantizable twin; fix: use one of the qat-capable models")
    model = builder(1000, **kwargs)
    source = _load_pretrained(model, spec, cfg)
    if cfg.hybrid == "vit" and cfg.vit_weights:
        from edgepipe.models.vit_weights import load_vit_weights

        load_vit_weights(model.vit, cfg.vit_weights)
    _replace_head(model, spec, num_classes, cfg)
    if cfg.bn_momentum is not None:
        import torch.nn as nn

        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    return model, source


def architecture(model_cfg: dict) -> ModelConfig:
    """A checkpoint's model config with its weight sources off: the architecture, for load_state_dict."""
    return ModelConfig(**{**model_cfg, "pretrained": "none", "vit_weights": None})


def checkpoint_image_size(checkpoint: dict) -> int:
    """The input side a checkpoint was trained at (224 for one that does not say: only the ViT hybrid's
    positions depend on it, and its checkpoints always say)."""
    size = (checkpoint.get("preprocessing") or {}).get("input_size")
    return int(size[-1]) if size else 224


def rebuild(checkpoint: dict, quantizable: bool = False) -> Any:
    """Rebuild the float model a checkpoint was saved from (architecture args travel with the weights)."""
    cfg = architecture(checkpoint["model_cfg"])
    model, _ = build_model(
        cfg, checkpoint["num_classes"], quantizable=quantizable, image_size=checkpoint_image_size(checkpoint)
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model


def load_qat_model(checkpoint: dict) -> Any:
    """Rebuild a prepared QAT model from a qat checkpoint (architecture + quant config travel with it), with
    observers and BatchNorm statistics frozen, in eval mode."""
    import torch

    from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat

    cfg = architecture(checkpoint["model_cfg"])
    model, _ = build_model(
        cfg, checkpoint["num_classes"], quantizable=True, image_size=checkpoint_image_size(checkpoint)
    )
    size = checkpoint["preprocessing"]["input_size"]
    # binds each int32 bias to its input's fake-quant; a checkpoint without numerics predates s7: s8
    numerics = (checkpoint.get("quant") or {}).get("numerics", "s8")
    prepare_qat(model, example=torch.zeros(1, *size), numerics=numerics)
    model.load_state_dict(checkpoint["state_dict"])
    freeze_observers(model)
    freeze_bn_stats(model)
    return model.eval()
