"""torch -> ONNX for float and QAT models, with class names and preprocessing in metadata_props."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from edgepipe.artifacts import atomic_path

INPUT, OUTPUT = "input", "logits"


def torchscript_export(model, sample, path: Path, opset: int) -> None:
    """The TorchScript exporter (deprecated in favour of dynamo): the dynamo exporter has no fake-tensor
    kernel for fake_quantize_per_tensor_affine under a dynamic batch (torch 2.15), so both FP32 and INT8
    go through this one path and stay comparable."""
    import torch

    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            do_constant_folding=True,
        )


def set_metadata(model_proto, meta: dict[str, Any]) -> None:
    del model_proto.metadata_props[:]
    for k, v in meta.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v)


def read_metadata(path: Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for p in m.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            out[p.key] = p.value
    return out


# Q/DQ placements of an INT8 graph (quant/onnx_qdq.py); a runtime's RuntimeSpec.qdq names the one it wants.
# integer: every layer int8, HardSwish gates as integer Add/Mul (ONNX Runtime fuses these into QLinear*);
# fused: HardSwish left for the runtime to fuse into its int8 convolution, squeeze-excite in float (as NNCF).
QDQ_SHAPES = ("integer", "fused")


def _pad(proto, multiple: int) -> list[dict[str, Any]]:
    from edgepipe.quant.pad_channels import pad_depthwise_channels

    return pad_depthwise_channels(proto, multiple)  # stamped as padded_channels: bench/macs.py leaves it out


def pad_for_onnxruntime(path: Path, multiple: int) -> list[dict[str, Any]]:
    """Pad an exported INT8 ONNX's depthwise widths in place (quant/pad_channels.py), what was padded stamped
    in its metadata (``padded_channels``), written atomically; export_onnx's ``pad_channels`` on a file."""
    import onnx

    proto = onnx.load(str(path))
    padded = _pad(proto, multiple)
    if not padded:
        return padded  # every width already a multiple: the file stays as it is
    set_metadata(proto, {**{p.key: p.value for p in proto.metadata_props}, "padded_channels": padded})
    with atomic_path(path) as raw:
        onnx.save(proto, str(raw))
    return padded


def export_onnx(
    model,
    path: Path,
    input_size: list[int],
    meta: dict[str, Any],
    opset: int,
    qdq: bool = False,
    qdq_shape: str = "integer",
    pad_channels: int = 16,
) -> Path:
    """Export, clean up the QDQ graph when ``qdq``, stamp metadata, check, and write atomically.

    ``qdq_shape`` (QDQ_SHAPES) places Q/DQ for the runtime that will run the graph: its RuntimeSpec.qdq. In
    the integer shape, depthwise widths that are not a multiple of ``pad_channels`` (0: off) are padded with
    zero channels onto ONNX Runtime's fast int8 depthwise kernel (quant/pad_channels.py; the same function,
    bit for bit); what was padded is stamped in the metadata (``padded_channels``)."""
    if qdq_shape not in QDQ_SHAPES:
        raise ValueError(f"unknown QDQ shape {qdq_shape!r}; use one of {', '.join(QDQ_SHAPES)}")
    import onnx
    import torch

    sample = torch.zeros(1, *input_size)
    with atomic_path(path) as raw:
        torchscript_export(model, sample, raw, opset)
        proto = onnx.load(str(raw))
        if qdq:
            from edgepipe.quant.onnx_qdq import clean_qdq, shape_for_openvino

            clean_qdq(proto, integer_activations=qdq_shape == "integer")
            if qdq_shape == "fused":
                shape_for_openvino(proto)
            elif pad_channels:
                meta = {**meta, "padded_channels": _pad(proto, pad_channels)}
        set_metadata(proto, meta)
        proto.producer_name = "edgepipe"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(raw))
    return path
