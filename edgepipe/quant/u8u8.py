"""qat.numerics: u8u8 -- an s8 INT8 ONNX with its weights written as uint8 (w + 128, zero point 128).

The same integers as the s8 model (every product and sum identical), but ONNX Runtime then runs its U8U8
kernels, which widen to 16 bits before multiplying on AVX2 (vpmaddwd) and so never saturate the way the
U8S8 path's vpmaddubsw does on CPUs without VNNI. What it costs on VNNI CPUs (U8S8 is their fast path) is
measured in benchmarks/int8_numerics.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.artifacts import atomic_path


def weights_to_uint8(path: Path) -> int:
    """Rewrite every DequantizeLinear of an int8 constant (the weights) in place; returns how many."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from edgepipe.quant.graph import Graph

    proto = onnx.load(str(path))
    gr = Graph(proto)
    done: dict[str, str] = {}

    def as_uint8(name: str) -> str:
        if name not in done:
            arr = numpy_helper.to_array(gr.inits[name]).astype(np.int16) + 128
            done[name] = gr.add_init(f"{name}_u8", arr.astype(np.uint8))
        return done[name]

    count = 0
    for node in gr.g.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        w, zp = node.input[0], node.input[2]
        if w not in gr.inits or zp not in gr.inits or gr.inits[w].data_type != TensorProto.INT8:
            continue
        if np.any(numpy_helper.to_array(gr.inits[zp]) != 0):
            continue  # weights are symmetric here; anything else is not ours to move
        node.input[0], node.input[2] = as_uint8(w), as_uint8(zp)
        count += 1
    gr.drop_unused()
    onnx.checker.check_model(proto)
    with atomic_path(path) as raw:
        onnx.save(proto, str(raw))
    return count
