"""NNCF post-training quantization (``ptq.method: nncf``): the peer OpenVINO users reach for.

``nncf.quantize`` with its defaults (the performance preset, fast bias correction) is run twice on the same
FP32 model and calibration images: on the ONNX graph (ONNX backend; QDQ ONNX for ONNX Runtime) and on the
OpenVINO model read from it (OpenVINO backend; FakeQuantize IR for OpenVINO), because NNCF places its
quantizers per backend and each runtime should get NNCF's own best graph. NNCF is an optional extra,
imported only here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifacts import atomic_path
from edgepipe.errors import RuntimeUnavailable

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'edgepipe[nncf]' (or pip install nncf)"


def _nncf():
    try:
        import nncf
    except ImportError as e:
        raise RuntimeUnavailable(
            f"ptq.method nncf needs NNCF, which is not installed; fix: {INSTALL_HINT}, or set ptq.method: ort"
        ) from e
    return nncf


def _dataset(x: np.ndarray, feed):
    nncf = _nncf()
    return nncf.Dataset([x[i : i + 1] for i in range(len(x))], feed)


def nncf_quantize_onnx(fp32_onnx: Path, out: Path, x: np.ndarray, meta: dict[str, Any]) -> Path:
    """QDQ ONNX from NNCF's ONNX backend, calibrated on ``x`` (N, C, H, W float32), metadata stamped."""
    import onnx

    from edgepipe.quant.export import INPUT, set_metadata

    nncf = _nncf()
    model = onnx.load(str(fp32_onnx))
    name = model.graph.input[0].name if model.graph.input else INPUT
    quantized = nncf.quantize(model, _dataset(x, lambda b: {name: b}), subset_size=len(x))
    set_metadata(quantized, meta)
    quantized.producer_name = "edgepipe+nncf"
    with atomic_path(out) as tmp:
        onnx.save(quantized, str(tmp))
    log.info("NNCF (ONNX backend) quantized %s -> %s on %d images", fp32_onnx, out, len(x))
    return out


def nncf_quantize_ir(fp32_onnx: Path, xml: Path, x: np.ndarray) -> Path:
    """OpenVINO IR (.xml + .bin) from NNCF's OpenVINO backend, calibrated on ``x``; written whole or not at
    all (the .xml, which readers look for, is renamed into place last)."""
    import openvino as ov

    from edgepipe.runtimes.openvino import save_ir

    nncf = _nncf()
    quantized = nncf.quantize(ov.convert_model(str(fp32_onnx)), _dataset(x, lambda b: b), subset_size=len(x))
    save_ir(quantized, xml)
    log.info("NNCF (OpenVINO backend) quantized %s -> %s on %d images", fp32_onnx, xml, len(x))
    return xml
