"""Class activation maps of edgepipe torch models with the `grad-cam` package (pytorch_grad_cam).

Float checkpoints explain the float model; QAT checkpoints the prepared fake-quant model QAT trained (its
fake-quant ops pass gradients straight through), so a user sees whether quantization moved the evidence.
Exported graphs (ONNX, OpenVINO IR) carry no gradients: explaining them is refused with the file to use.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.constants import CAM_METHODS
from edgepipe.errors import BenchInputError, EdgepipeError, ModelError, missing_dependency

log = logging.getLogger(__name__)

METHODS = CAM_METHODS  # names a recipe's explain.method and --method accept (edgepipe.constants)
GRAPH_SUFFIXES = {".onnx": "an ONNX graph", ".xml": "an OpenVINO IR", ".bin": "an OpenVINO IR",
                  ".pt2": "a torch.export program"}  # fmt: skip


def _grad_cam():
    try:
        import pytorch_grad_cam
    except ImportError:
        raise missing_dependency("grad-cam") from None
    return pytorch_grad_cam


@dataclass
class Explainable:
    """A torch model with what explaining it needs: preprocessing, class names and where to look."""

    path: Path
    module: Any
    arch: str | None
    classes: list[str]
    preprocessing: dict[str, Any]
    quantized: bool

    @property
    def kind(self) -> str:
        return "QAT (fake-quant)" if self.quantized else "float"


def checkpoint_for(graph: Path) -> str:
    """The checkpoint to explain instead of an exported graph: the run's finetune or qat model.pt."""
    meta: dict[str, Any] = {}
    if graph.suffix.lower() == ".onnx":
        from edgepipe.quant.export import read_metadata

        try:
            meta = read_metadata(graph)
        except Exception:  # noqa: BLE001 - only a hint: an unreadable graph still gets the general answer
            meta = {}
    quantized = meta.get("precision") == "int8" or "int8" in graph.stem
    stage = "qat" if quantized else "finetune"
    run = graph.resolve().parent.parent
    candidate = run / stage / "model.pt"
    if graph.resolve().parent.name == "export" and candidate.is_file():
        return str(candidate)
    return f"the {stage}/model.pt of the run that exported it" + (
        "" if meta.get("precision") else " (finetune/model.pt for float, qat/model.pt for QAT)"
    )


def load_explainable(path: Path) -> Explainable:
    """An edgepipe checkpoint (finetune or qat); graphs are refused with the checkpoint to give instead."""
    path = Path(path)
    kind = GRAPH_SUFFIXES.get(path.suffix.lower())
    if kind is not None:
        raise BenchInputError(
            f"{path} is {kind}, which has no gradients to explain; fix: explain the torch checkpoint, "
            f"{checkpoint_for(path)}"
        )
    if not path.is_file():
        raise BenchInputError(f"model file not found: {path}; fix: give a finetune or qat model.pt")
    from edgepipe.bench.loading import load_checkpoint

    ckpt, module, quantized = load_checkpoint(path)
    module.requires_grad_(True)  # Grad-CAM needs gradients at the target layer; weights are not changed
    classes = list(ckpt["classes"])
    return Explainable(path, module, ckpt.get("arch"), classes, ckpt["preprocessing"], quantized)


def target_layer(module: Any, arch: str | None, override: str | None = None) -> tuple[str, Any]:
    """(name, module) to explain: --target-layer, else the registry's cam_layer, else the last Conv2d."""
    import torch.nn as nn

    named = dict(module.named_modules())
    name = override
    if name is None and arch is not None:
        from edgepipe.models.registry import get_spec

        try:
            name = get_spec(arch).cam_layer
        except ModelError:
            name = None
    if name is None:
        convs = [n for n, m in named.items() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ModelError("the model has no Conv2d to explain; fix: pass --target-layer NAME")
        name = convs[-1]
    if name not in named or name == "":
        near = [n for n in named if n and n.count(".") <= 1][-8:]
        raise ModelError(
            f"no module named '{name}' in the model; fix: pass --target-layer with one of its module names, "
            f"e.g. {', '.join(near)}"
        )
    return name, named[name]


def map_sizes(module: Any, names: list[str], x: np.ndarray) -> dict[str, tuple[int, int]]:
    """(H, W) of each named module's output for the input ``x`` (one forward), in the order they ran."""
    import torch

    named = dict(module.named_modules())
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_module, _inputs, out) -> None:  # returns None: the output passes on unchanged
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                sizes.setdefault(name, (int(out.shape[-2]), int(out.shape[-1])))

        return hook

    hooks = [named[n].register_forward_hook(record(n)) for n in names if n in named]
    try:
        with torch.no_grad():
            module.eval()(torch.from_numpy(np.ascontiguousarray(x[:1], dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def layer_for_input(model: Explainable, x: np.ndarray, min_side: int = 4) -> tuple[str, tuple[int, int]]:
    """The arch's layer (target_layer) when its map has at least ``min_side`` pixels a side at this input
    size; else the deepest of its sibling modules that has (a 32-pixel Fashion-MNIST input leaves
    MobileNetV3's last block 1x1: one number, a flat heat map). Returns (name, map size)."""
    name, _ = target_layer(model.module, model.arch)
    parent = name.rpartition(".")[0]
    owner = dict(model.module.named_modules())[parent]
    siblings = [f"{parent}.{n}" if parent else n for n, _ in owner.named_children()]
    sizes = map_sizes(model.module, [*siblings, name], x)
    if name not in sizes or min(sizes[name]) >= min_side:
        return name, sizes.get(name, (0, 0))
    ran = list(sizes)  # forward order
    big = [n for n in ran[: ran.index(name)] if min(sizes[n]) >= min_side]
    if not big:
        return name, sizes[name]
    log.info("%s's map is %dx%d at this input size; explaining %s (%dx%d) instead", name, *sizes[name],
             big[-1], *sizes[big[-1]])  # fmt: skip
    return big[-1], sizes[big[-1]]


@dataclass
class Explanation:
    cams: np.ndarray  # (N, H, W) in [0, 1], at the model's input size
    pred: np.ndarray  # (N,) predicted class index
    prob: np.ndarray  # (N,) its softmax probability
    target: np.ndarray  # (N,) the class each map explains
    layer: str
    method: str


@contextlib.contextmanager
def _output_fake_quant_off(net: Any, x: Any):
    """A QAT model's CAM is taken of its logits before the fake-quant that quantizes them: fake-quant passes
    no gradient where it clamps, and the winning logit often sits at the top of the calibrated range, which
    left a flat (all-zero) map for about half of the images. Only that last fake-quant is switched off, only
    while the maps are computed; the probabilities are the full QAT model's."""
    import torch

    from edgepipe.quant.qat import fake_quant_modules

    calls: list[tuple[Any, Any]] = []
    mods = [m for n, m in fake_quant_modules(net) if not n.endswith("weight_fake_quant")]
    hooks = [m.register_forward_hook(lambda mod, _i, out: calls.append((mod, out))) for m in mods]
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for h in hooks:
            h.remove()
    last = calls[-1] if calls else None
    if last is None or not (isinstance(last[1], torch.Tensor) and torch.equal(last[1], out)):
        yield  # the output is not fake-quantized: nothing clamps the target logit
        return
    fq = last[0]
    was_on = bool(fq.fake_quant_enabled[0])
    fq.disable_fake_quant()
    try:
        yield
    finally:
        if was_on:
            fq.enable_fake_quant()


def explain_batch(
    model: Explainable,
    x: np.ndarray,
    method: str = "gradcam",
    layer: str | None = None,
    targets: list[int] | None = None,
) -> Explanation:
    """Maps for a preprocessed float32 NCHW batch; each explains ``targets[i]``, else the predicted class."""
    import torch

    if method not in METHODS:
        raise BenchInputError(f"unknown --method '{method}'; fix: use one of {', '.join(METHODS)}")
    gc = _grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    name, module = target_layer(model.module, model.arch, layer)
    net = model.module.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        probs = torch.softmax(net(xt).float(), 1).numpy()
    pred = probs.argmax(1)
    target = np.asarray(targets if targets is not None else pred, dtype=np.int64)
    try:
        with _output_fake_quant_off(net, xt[:1]) if model.quantized else contextlib.nullcontext():
            with getattr(gc, METHODS[method])(model=net, target_layers=[module]) as cam:
                maps = cam(input_tensor=xt, targets=[ClassifierOutputTarget(int(t)) for t in target])
    except (RuntimeError, ValueError, IndexError) as exc:
        raise EdgepipeError(
            f"{method} failed at layer '{name}' ({str(exc).splitlines()[0][:160]}); fix: pass --target-layer "
            "with a convolutional feature map of this model"
        ) from None
    return Explanation(
        np.asarray(maps, np.float32), pred, probs[np.arange(len(pred)), pred], target, name, method
    )


def display_image(x: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """A preprocessed CHW array back to an HWC RGB image in [0, 1] (what the model saw, crop included)."""
    mean = np.asarray(pre["mean"], np.float32)[:, None, None]
    std = np.asarray(pre["std"], np.float32)[:, None, None]
    return np.clip(x * std + mean, 0.0, 1.0).transpose(1, 2, 0)


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The heat map over the image (JET colours, half and half), uint8 HWC: grad-cam's own overlay."""
    _grad_cam()
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32), cam, use_rgb=True)
