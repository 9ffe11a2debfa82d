"""``model.vit_weights``: a local timm or Hugging Face ViT checkpoint into the hybrid's encoder blocks.

The hybrid's tokens come from layer 4, not from patches, so the patch embedding is not used; the class token,
the blocks, the final norm and the positions are (positions resampled from the checkpoint's patch grid to the
layer-4 grid, bicubic as timm's ``resample_abs_pos_embed``). An encoder of depth N takes the checkpoint's
first N blocks. Hub names are refused: nothing is downloaded here.

Key names:

* timm (``vit_tiny_patch16_224``): ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
  ``cls_token``, ``pos_embed``, ``norm`` -- the encoder's own names;
* Hugging Face ``ViTModel``/``ViTForImageClassification`` (optionally under ``vit.``):
  ``encoder.layer.N.attention.attention.{query,key,value}`` (concatenated into qkv),
  ``attention.output.dense`` (proj), ``layernorm_before``/``layernorm_after`` (norm1/norm2),
  ``intermediate.dense``/``output.dense`` (fc1/fc2), ``embeddings.cls_token``,
  ``embeddings.position_embeddings``, ``layernorm``.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from edgepipe.errors import ModelError

log = logging.getLogger(__name__)

_BLOCK = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")


def _read(path_or_name: str) -> tuple[dict[str, Any], Path]:

    path = Path(path_or_name).expanduser()
    if not path.is_file():
        hub = path_or_name.startswith(("hf_hub:", "hf-hub:", "timm/")) or (
            "/" not in path_or_name and not path.suffix
        )
        what = "a hub name; nothing is downloaded here" if hub else "file not found"
        raise ModelError(
            f"model.vit_weights {path_or_name!r}: {what}; fix: download the checkpoint file (e.g. timm's "
            "vit_tiny_patch16_224 model.safetensors) and give its local path, or remove vit_weights"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            from edgepipe.models.checkpoint import safe_load

            state = safe_load(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file has one fix
        raise ModelError(
            f"model.vit_weights: cannot read {path} ({type(exc).__name__}); fix: give a timm or Hugging Face "
            "ViT checkpoint (.safetensors, or a torch state dict .pth/.bin)"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"model.vit_weights: {path} holds no state dict; fix: give a ViT checkpoint file")
    return state, path


def _from_hf(state: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face ViT names -> timm's (q, k, v concatenated into qkv, as timm stores them)."""
    import torch

    prefix = next(
        (k[: k.index("encoder.layer.")] for k in state if "encoder.layer." in k and k.endswith(".weight")), ""
    )
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", rest)
        if m:
            idx, name, kind = m.groups()
            if name in _HF_BLOCK:
                out[f"blocks.{idx}.{_HF_BLOCK[name]}.{kind}"] = value
            continue
        simple = {
            "embeddings.cls_token": "cls_token",
            "embeddings.position_embeddings": "pos_embed",
            "layernorm.weight": "norm.weight",
            "layernorm.bias": "norm.bias",
        }
        if rest in simple:
            out[simple[rest]] = value
    for key in list(state):
        query = r"encoder\.layer\.(\d+)\.attention\.attention\.query\.(weight|bias)$"
        m = re.match(re.escape(prefix) + query, key)
        if m:
            idx, kind = m.groups()
            parts = [state[f"{prefix}encoder.layer.{idx}.{name}.{kind}"] for name in _HF_QKV]
            out[f"blocks.{idx}.attn.qkv.{kind}"] = torch.cat(parts, 0)
    return out


def _resample_positions(pos: Any, grid: int, prefix_tokens: int = 1) -> Any:
    """[1, prefix + g*g, C] positions on a g x g patch grid -> [1, prefix + grid*grid, C] (bicubic)."""
    import torch
    import torch.nn.functional as F

    patches = pos.shape[1] - prefix_tokens
    old = int(math.isqrt(patches))
    if old * old != patches:
        raise ModelError(
            f"model.vit_weights: pos_embed has {patches} patch positions, not a square grid; "
            "fix: give a ViT checkpoint with square positions (e.g. 14x14 at 224 px)"
        )
    if old == grid:
        return pos
    width = pos.shape[-1]
    g = pos[:, prefix_tokens:].reshape(1, old, old, width).permute(0, 3, 1, 2).float()
    g = F.interpolate(g, size=(grid, grid), mode="bicubic", align_corners=False)
    g = g.permute(0, 2, 3, 1).reshape(1, grid * grid, width).to(pos.dtype)
    return torch.cat([pos[:, :prefix_tokens], g], dim=1)


def timm_state(state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The checkpoint in timm's names, and which format it was ('timm' or 'huggingface')."""
    if any(re.match(r"(.*\.)?encoder\.layer\.\d+\.attention\.attention\.query\.weight$", k) for k in state):
        return _from_hf(state), "huggingface"
    if any(re.match(r"blocks\.\d+\.attn\.qkv\.weight$", k) for k in state):
        return state, "timm"
    raise ModelError(
        "model.vit_weights: neither timm (blocks.N.attn.qkv.weight) nor Hugging Face "
        "(encoder.layer.N.attention.attention.query.weight) ViT keys found; fix: give a ViT checkpoint"
    )


def load_vit_weights(encoder: Any, path_or_name: str) -> dict[str, Any]:
    """Load the checkpoint's first ``len(encoder.blocks)`` blocks, class token, positions and final norm into
    ``encoder`` (a models.vit_hybrid.ViTEncoder); returns what was loaded, for the log and the tests."""
    import torch

    raw, path = _read(path_or_name)
    state, fmt = timm_state(raw)
    depth = len(encoder.blocks)
    have = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    if len(have) < depth:
        raise ModelError(
            f"model.vit_weights: {path.name} has {len(have)} blocks, model.vit_depth is {depth}; "
            f"fix: set vit_depth <= {len(have)}"
        )
    kinds = ("weight", "bias")
    wanted = [f"blocks.{i}.{name}.{kind}" for i in range(depth) for name in _BLOCK for kind in kinds]
    wanted += ["cls_token", "norm.weight", "norm.bias"]
    own = encoder.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ModelError(
            f"model.vit_weights: {path.name} lacks {', '.join(missing[:3])}; "
            "fix: give a complete ViT checkpoint"
        )
    new = {k: state[k] for k in wanted}
    if "pos_embed" in state:
        new["pos_embed"] = _resample_positions(state["pos_embed"], encoder.grid)
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in new.items() if v.shape != own[k].shape
    ]
    if wrong:
        raise ModelError(
            f"model.vit_weights: {path.name} does not fit the encoder ({wrong[0]}); fix: set vit_width, "
            "vit_heads and vit_mlp_ratio to the checkpoint's (ViT-tiny: 192, 3, 4.0)"
        )
    with torch.no_grad():
        encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in new.items()}, strict=False)
    log.info("vit_weights: %d tensors (%d blocks, %s format) from %s", len(new), depth, fmt, path)
    return {"path": str(path), "format": fmt, "blocks": depth, "tensors": sorted(new)}
