"""`edgepipe bench MODEL...`: any ONNX file, with or without edgepipe metadata."""

from __future__ import annotations

from pathlib import Path

from edgepipe.artifacts import atomic_write_json
from edgepipe.bench.harness import bench_row
from edgepipe.bench.report import markdown_table, speedups
from edgepipe.bench.timing import environment
from edgepipe.errors import BenchInputError


def _input_size(path: Path) -> list[int]:
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise BenchInputError(f"{path} is not an ONNX model; fix: give a .onnx file") from None
    dims = [d.dim_value or None for d in m.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or any(d is None for d in dims[1:]):
        raise BenchInputError(
            f"{path}: input shape {dims} is not NCHW with fixed C, H, W; fix: export with a "
            "fixed image size (only the batch may be dynamic)"
        )
    return [int(d) for d in dims[1:]]


def bench_models(
    models: list[Path],
    runtimes: list[str],
    threads: int,
    batch_size: int,
    warmup: int,
    min_iters: int,
    min_seconds: float,
    json_out: Path | None,
) -> str:
    from edgepipe.runtimes import get_runtime

    rows = []
    for path in models:
        if not path.is_file():
            raise BenchInputError(f"model file not found: {path}; fix: give the path of an exported .onnx")
        size = _input_size(path)
        label = "fp32" if "int8" not in path.stem and "ptq" not in path.stem else path.stem
        for rt_name in runtimes:
            options = {"threads": threads} | ({"precision": "f32"} if rt_name == "openvino" else {})
            rt = get_runtime(rt_name, path, **options)
            row = bench_row(
                label,
                path,
                rt_name,
                rt,
                x=None,
                y=None,
                input_size=size,
                batch_size=batch_size,
                warmup=warmup,
                min_iters=min_iters,
                min_seconds=min_seconds,
            )
            row["model"] = path.name if label != "fp32" else label
            row["runtime_label"] = rt_name + ("-f32" if rt_name == "openvino" else "")
            rows.append(row)
    speedups(rows)
    env = environment()
    if json_out is not None:
        atomic_write_json(json_out, {"schema": "edgepipe.bench/1", "environment": env, "rows": rows})
    return markdown_table(rows)
