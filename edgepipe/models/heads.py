"""``model.head: arcmargin``: a cosine head, and the additive angular margin loss (ArcFace, Deng et al. 2019).

The head computes ``s * cos(x, w_c)`` for every class c, at training and at inference alike; the margin is the
loss's business (``ArcMarginLoss``), applied to the target class only while gradients are taken. So the model
the train loop calls is the model that is exported: normalise the features, one MatMul with the constant
``s * normalize(W)`` (folded at export), nothing that needs labels.

The quantizable twin is the same class: ``input_quant``/``output_quant`` are QuantStubs (identities until
prepare_qat observes them) and ``weight_fake_quant`` is an identity that quant/qat.py replaces by a per-tensor
int8 fake-quant of the effective weight (every row has norm s, so one scale fits all classes); quant/qdq.py
turns the trained head into normalise -> Q/DQ -> MatMul(int8 weight) -> Q/DQ.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (ONNX: ReduceL2, Clip, Div): one definition for every twin."""
    return F.normalize(x, dim=1)


class CosineHead(nn.Module):
    """Logits ``scale * cos(x, w_c)``: a Linear without bias on L2-normalised features and class weights."""

    edgepipe_fresh = True

    def __init__(self, in_features: int, num_classes: int, scale: float):
        super().__init__()
        from edgepipe.quant.qat import quant_stubs

        self.in_features, self.out_features, self.scale = in_features, num_classes, float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.input_quant, _ = quant_stubs()
        self.output_quant, _ = quant_stubs()
        self.weight_fake_quant: nn.Module = nn.Identity()

    def effective_weight(self) -> torch.Tensor:
        return self.scale * normalize(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(normalize(x))
        return self.output_quant(x @ self.weight_fake_quant(self.effective_weight()).t())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale:g}"


class ArcMarginLoss(nn.Module):
    """``base(s cos(theta + m) at the target, s cos(theta) elsewhere)`` from the head's ``s cos`` logits.

    The margin acts only while gradients are taken (training steps); validation, run under inference mode,
    gets ``base`` on the plain scaled cosines, which is what the exported model outputs. Beyond
    theta + m > pi, cos is no longer decreasing in theta: ArcFace's linear fallback ``cos - m sin(m)`` keeps
    the target logit monotone there."""

    def __init__(self, base: nn.Module, scale: float, margin: float):
        super().__init__()
        self.base, self.scale, self.margin = base, float(scale), float(margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold, self.fallback = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.margin == 0 or not torch.is_grad_enabled():
            return self.base(logits, target)
        cos = (logits.float() / self.scale).clamp(-1 + 1e-7, 1 - 1e-7)
        cos_t = cos.gather(1, target[:, None])
        phi = cos_t * self.cos_m - torch.sqrt(1 - cos_t * cos_t) * self.sin_m
        phi = torch.where(cos_t > self.threshold, phi, cos_t - self.fallback)
        return self.base(cos.scatter(1, target[:, None], phi) * self.scale, target)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, margin={self.margin:g}"


def training_loss(model_cfg, base: nn.Module) -> nn.Module:
    """The train loop's loss for this model: ``base``, wrapped with the margin for an arcmargin head."""
    if model_cfg.head != "arcmargin":
        return base
    return ArcMarginLoss(base, model_cfg.arc_scale, model_cfg.arc_margin)
