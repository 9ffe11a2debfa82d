"""``model.hybrid: vit``: a ResNet/ResNeXt whose layer-4 features go through ViT encoder blocks.

Layer 4's map ([N, 2048, h, w]) is projected to the token width by a 1x1 conv, flattened to h*w tokens, a
class token prepended and learned positions added; N pre-norm blocks (ViT's: LayerNorm -> multi-head
attention -> add, LayerNorm -> MLP with GELU -> add) follow, and the tokens are pooled into the head's input
(``model.vit_pool``): ``avg``, the mean of the spatial tokens, normalised (timm's ``global_pool='avg'``), or
``token``, the normalised class token (ViT's own). With ``avg`` the residual stream carries layer 4's
projected features straight to the head, as ResNeXt's own average pool does; through the class token the
CNN's gradient first passes attention weights initialised at std 0.02.
``pos_embed`` covers the grid of the recipe's image size (ResNet's five stride-2 steps).

One class serves the float model and its quantizable twin (the state dicts are equal). The attention is
written with explicit ``nn.Linear`` layers (fused qkv, as timm) and ``torch.matmul``, not
``nn.MultiheadAttention`` (eager QAT cannot quantize inside it). Every matmul input passes a QuantStub (an
identity in float; a uint8 fake-quant once prepared), so the export is ``DQ, DQ -> MatMul|Gemm`` for each of
the six products of a block (qkv, q.k, attn.v, proj, fc1, fc2), which ONNX Runtime and OpenVINO run as integer
GEMMs. Their outputs stay float (``float_output_qconfig``): LayerNorm, Softmax, GELU and the residual adds
run in float (benchmarks/vit_hybrid_int8.py measures what an integer Softmax would give). Linear layers see
2-D [tokens, width] inputs so they export as Gemm, whose int32 bias the export quantizes as for the CNN head.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _stub() -> nn.Module:
    from edgepipe.quant.qat import quant_stubs

    return quant_stubs()[0]


def _float_output(linear: nn.Linear) -> nn.Linear:
    from edgepipe.quant.qat import float_output_qconfig

    linear.qconfig = float_output_qconfig()
    return linear


def _float(module: nn.Module) -> nn.Module:
    module.qconfig = None  # eager QAT leaves it float: no observer on its output
    return module


def feature_grid(size: int, steps: int = 5) -> int:
    """The side of ResNet's layer-4 map for a ``size`` input: conv1, the max-pool and layers 2-4 each map s to
    (s - 1) // 2 + 1."""
    for _ in range(steps):
        size = (size - 1) // 2 + 1
    return size


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.scale = self.head_dim**-0.5
        self.qkv_in, self.qkv = _stub(), _float_output(nn.Linear(width, 3 * width))
        self.q_in, self.k_in, self.v_in = _stub(), _stub(), _stub()
        self.softmax = _float(nn.Softmax(dim=-1))
        self.attn_in = _stub()
        self.proj_in, self.proj = _stub(), _float_output(nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, tokens, width = x.shape
        qkv = self.qkv(self.qkv_in(x.reshape(-1, width)))
        qkv = qkv.reshape(-1, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, heads, tokens, head_dim]
        scores = torch.matmul(self.q_in(q), self.k_in(k.transpose(-2, -1))) * self.scale
        out = torch.matmul(self.attn_in(self.softmax(scores)), self.v_in(v))
        out = out.transpose(1, 2).reshape(-1, width)
        return self.proj(self.proj_in(out)).reshape(-1, tokens, width)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1_in, self.fc1 = _stub(), _float_output(nn.Linear(width, hidden))
        self.act = _float(nn.GELU())
        self.fc2_in, self.fc2 = _stub(), _float_output(nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, tokens, width = x.shape
        h = self.act(self.fc1(self.fc1_in(x.reshape(-1, width))))
        return self.fc2(self.fc2_in(h)).reshape(-1, tokens, width)


class Block(nn.Module):
    """A pre-norm ViT encoder block (timm's ``Block`` names: norm1, attn, norm2, mlp)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = _float(nn.LayerNorm(width, eps=1e-6))
        self.attn = Attention(width, heads)
        self.norm2 = _float(nn.LayerNorm(width, eps=1e-6))
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """Feature map -> tokens -> blocks -> pooled and normalised ([N, width]), quantized for the head."""

    edgepipe_fresh = True

    def __init__(
        self,
        channels: int,
        grid: int,
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: float,
        pool: str = "avg",
    ):
        super().__init__()
        if pool not in ("avg", "token"):
            raise ValueError(f"unknown pool {pool!r}; use avg or token")
        self.grid, self.width, self.pool = grid, width, pool
        self.proj = nn.Conv2d(channels, width, 1)  # uint8 output: ONNX Runtime fuses Conv only with a Q after
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm = _float(nn.LayerNorm(width, eps=1e-6))
        self.head_in = _stub()
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT initialisation: truncated normal (std 0.02) linears and positions, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)  # [N, h*w, width]
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        t = self.blocks(t)
        pooled = t[:, 1:].mean(dim=1) if self.pool == "avg" else t[:, 0]
        return self.head_in(self.norm(pooled))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """Nothing to fuse (no BatchNorm; LayerNorm, GELU and Softmax stay float)."""

    def extra_repr(self) -> str:
        return f"grid={self.grid}x{self.grid}, width={self.width}, pool={self.pool}"


def hybrid_resnet(
    layers: list[int], extra: dict, num_classes: int, variant, quantizable: bool
) -> nn.Module:
    """torchvision's ResNet of ``layers`` blocks per stage (``extra``: ResNeXt's grouping), or its quantizable
    twin, with ``ViTEncoder`` between layer 4 and ``fc``; the
    blocks' checkpoint (``model.vit_weights``) is loaded by models/build.py, not here: rebuilding a trained
    model needs the architecture only."""
    from torchvision.models.quantization.resnet import QuantizableBottleneck, QuantizableResNet
    from torchvision.models.resnet import Bottleneck, ResNet

    vit = variant.vit

    def attach(model: nn.Module) -> nn.Module:
        channels = model.fc.in_features
        model.vit = ViTEncoder(
            channels, feature_grid(vit.image_size), vit.depth, vit.width, vit.heads, vit.mlp_ratio, vit.pool
        )
        model.avgpool = nn.Identity()  # the encoder pools
        model.fc = nn.Linear(vit.width, num_classes)
        return model

    def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        return model.fc(model.vit(x))

    class HybridResNet(ResNet):
        def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
            return features(self, x)

    class QuantizableHybridResNet(QuantizableResNet):
        def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
            return features(self, x)

        def fuse_model(self, is_qat: bool | None = None) -> None:
            super().fuse_model(is_qat)
            self.vit.fuse_model(is_qat)

    if not quantizable:
        return attach(HybridResNet(Bottleneck, layers, num_classes=1000, **extra))
    model = attach(QuantizableHybridResNet(QuantizableBottleneck, layers, num_classes=1000, **extra))
    for m in model.modules():  # as torchvision's _replace_relu: fused ReLUs must not be in-place
        if type(m) is nn.ReLU:
            m.inplace = False
    return model
