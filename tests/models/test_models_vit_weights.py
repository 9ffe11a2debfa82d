"""model.vit_weights: timm and Hugging Face ViT checkpoint files (generated here, tiny) into the hybrid's
encoder; hub names and misfits are one-line errors with the fix."""

from __future__ import annotations

import pytest
import torch

from edgepipe.errors import ModelError
from edgepipe.models.build import build_model
from edgepipe.models.vit_hybrid import ViTEncoder
from edgepipe.models.vit_weights import load_vit_weights
from edgepipe.recipe import ModelConfig

WIDTH, HEADS, DEPTH, PATCH_GRID = 16, 2, 3, 4  # a "ViT" of 3 blocks on a 4x4 patch grid


def _timm_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint in timm's VisionTransformer names (patch embedding and head included, as timm saves)."""
    g = torch.Generator().manual_seed(seed)
    w, h = WIDTH, 4 * WIDTH

    def r(*shape):
        return torch.randn(*shape, generator=g)

    state = {
        "cls_token": r(1, 1, w),
        "pos_embed": r(1, 1 + PATCH_GRID**2, w),
        "patch_embed.proj.weight": r(w, 3, 16, 16),
        "patch_embed.proj.bias": r(w),
        "norm.weight": r(w),
        "norm.bias": r(w),
        "head.weight": r(1000, w),
        "head.bias": r(1000),
    }
    for i in range(DEPTH):
        for name, shape in (
            ("norm1", (w,)), ("norm2", (w,)), ("attn.qkv", (3 * w, w)), ("attn.proj", (w, w)),
            ("mlp.fc1", (h, w)), ("mlp.fc2", (w, h)),
        ):
            state[f"blocks.{i}.{name}.weight"] = r(*shape)
            state[f"blocks.{i}.{name}.bias"] = r(shape[0])
    return state


def _hf_state(timm: dict[str, torch.Tensor], prefix: str = "vit.") -> dict[str, torch.Tensor]:
    """The same weights in Hugging Face ViTForImageClassification names (q, k, v separate)."""
    out = {
        f"{prefix}embeddings.cls_token": timm["cls_token"],
        f"{prefix}embeddings.position_embeddings": timm["pos_embed"],
        f"{prefix}embeddings.patch_embeddings.projection.weight": timm["patch_embed.proj.weight"],
        f"{prefix}layernorm.weight": timm["norm.weight"],
        f"{prefix}layernorm.bias": timm["norm.bias"],
        "classifier.weight": timm["head.weight"],
    }
    names = {
        "norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
    }
    for i in range(DEPTH):
        base = f"{prefix}encoder.layer.{i}"
        for kind in ("weight", "bias"):
            for ours, theirs in names.items():
                out[f"{base}.{theirs}.{kind}"] = timm[f"blocks.{i}.{ours}.{kind}"]
            q, k, v = timm[f"blocks.{i}.attn.qkv.{kind}"].chunk(3, 0)
            out[f"{base}.attention.attention.query.{kind}"] = q
            out[f"{base}.attention.attention.key.{kind}"] = k
            out[f"{base}.attention.attention.value.{kind}"] = v
    return out


def _encoder(depth: int = 2, grid: int = 2, width: int = WIDTH) -> ViTEncoder:
    return ViTEncoder(8, grid, depth, width, HEADS, 4.0)


def test_loads_timm_safetensors_blocks_and_resamples_positions(tmp_path):
    from safetensors.torch import save_file

    state = _timm_state()
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    enc = _encoder(depth=2, grid=2)
    info = load_vit_weights(enc, str(path))
    assert info["format"] == "timm" and info["blocks"] == 2
    for i in range(2):
        torch.testing.assert_close(enc.blocks[i].attn.qkv.weight, state[f"blocks.{i}.attn.qkv.weight"])
        torch.testing.assert_close(enc.blocks[i].mlp.fc2.bias, state[f"blocks.{i}.mlp.fc2.bias"])
        torch.testing.assert_close(enc.blocks[i].norm1.weight, state[f"blocks.{i}.norm1.weight"])
    torch.testing.assert_close(enc.cls_token, state["cls_token"])
    torch.testing.assert_close(enc.norm.weight, state["norm.weight"])
    assert enc.pos_embed.shape == (1, 5, WIDTH)
    torch.testing.assert_close(enc.pos_embed[:, 0], state["pos_embed"][:, 0])  # class position kept


def test_same_grid_positions_load_unchanged(tmp_path):
    state = _timm_state()
    path = tmp_path / "vit.pth"
    torch.save({"model": state}, path)  # timm training checkpoints nest the weights
    enc = _encoder(depth=1, grid=PATCH_GRID)
    load_vit_weights(enc, str(path))
    torch.testing.assert_close(enc.pos_embed, state["pos_embed"])


@pytest.mark.parametrize("prefix", ["vit.", ""])
def test_huggingface_checkpoint_loads_as_timm(tmp_path, prefix):
    state = _timm_state()
    timm_path, hf_path = tmp_path / "timm.pth", tmp_path / "pytorch_model.bin"
    torch.save(state, timm_path)
    torch.save(_hf_state(state, prefix), hf_path)
    a, b = _encoder(depth=DEPTH), _encoder(depth=DEPTH)
    assert load_vit_weights(b, str(hf_path))["format"] == "huggingface"
    load_vit_weights(a, str(timm_path))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        if not name.startswith("proj."):  # the 1x1 projection from layer 4 is the hybrid's own
            torch.testing.assert_close(x, y, msg=name)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "hf_hub:timm/vit_tiny_patch16_224.augreg_in21k"])
def test_hub_name_is_an_offline_error_naming_the_fix(name):
    with pytest.raises(ModelError, match="hub name.*download the checkpoint file") as e:
        load_vit_weights(_encoder(), name)
    assert "\n" not in str(e.value)


def test_misfits_are_errors(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(_timm_state(), path)
    with pytest.raises(ModelError, match="has 3 blocks, model.vit_depth is 4; fix: set vit_depth <= 3"):
        load_vit_weights(_encoder(depth=4), str(path))
    with pytest.raises(ModelError, match="does not fit the encoder.*vit_width"):
        load_vit_weights(_encoder(width=2 * WIDTH), str(path))
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(ModelError, match="neither timm"):
        load_vit_weights(_encoder(), str(other))
    with pytest.raises(ModelError, match="file not found"):
        load_vit_weights(_encoder(), str(tmp_path / "missing.safetensors"))


def test_build_model_loads_vit_weights_and_rebuild_does_not_need_them(tmp_path):
    from edgepipe.models.build import architecture

    path = tmp_path / "vit.pth"
    state = _timm_state()
    torch.save(state, path)
    cfg = ModelConfig(
        arch="resnext50_32x4d", pretrained="none", hybrid="vit", vit_width=WIDTH, vit_heads=HEADS,
        vit_depth=1, vit_weights=str(path),
    )
    model, _ = build_model(cfg, 3, image_size=32)
    torch.testing.assert_close(model.vit.blocks[0].attn.proj.weight, state["blocks.0.attn.proj.weight"])
    path.unlink()  # a trained model is rebuilt from its checkpoint alone
    assert architecture(cfg.model_dump()).vit_weights is None
