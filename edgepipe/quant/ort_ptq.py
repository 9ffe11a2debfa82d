"""ONNX Runtime static post-training quantization of a float ONNX model: the baseline QAT is compared with."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgepipe.artifacts import atomic_path
from edgepipe.quant.export import INPUT, set_metadata


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed images."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 16):
        self.batches = iter([{input_name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.batches, None)


def ort_static_quantize(
    fp32, out, x: np.ndarray, calibration: str, meta: dict, numerics: str = "s8"
) -> None:
    """ONNX Runtime's static quantization as its docs advise: pre-process, then QDQ per-channel, U8 x S8 in
    the QAT model's numerics (qat.NUMERICS: s7 = ORT's reduce_range, 7-bit weights; u8u8 = uint8 weights),
    so the baseline runs the same kernels, right on the same targets; ``x`` are the calibration images,
    ``meta`` the metadata_props stamped on the result."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibration]
    with tempfile.TemporaryDirectory() as work, atomic_path(out) as tmp:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # folds BN, infers shapes
        quantize_static(
            str(pre),
            str(tmp),
            _Reader(x, INPUT),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if numerics == "u8u8" else QuantType.QInt8,
            reduce_range=numerics == "s7",
            calibrate_method=method,
        )
        proto = onnx.load(str(tmp))
        set_metadata(proto, meta)
        onnx.save(proto, str(tmp))
