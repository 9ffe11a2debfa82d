"""What `edgepipe bench` can load, and on which runtimes each kind can run.

ONNX (.onnx), OpenVINO IR (.xml + .bin), edgepipe torch checkpoints (model.pt from finetune or qat) and
torch.export programs (.pt2). Every model ends up with the same facts: its declared input shape, the class
names and preprocessing that travel with it (if any), and an ONNX graph to count MACs on (if one exists).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.errors import BenchInputError, ModelError, RuntimeUnavailable
from edgepipe.runtimes.registry import kind_of_suffix, model_kind, runtime_spec

log = logging.getLogger(__name__)


Shape = tuple[int | None, ...]


@dataclass
class BenchModel:
    name: str
    path: Path
    kind: str
    input_shape: Shape  # as the model declares it (None = dynamic)
    meta: dict[str, Any]  # "classes" / "preprocessing" that travel with the model, if any
    meta_source: str | None
    onnx_path: Path | None  # the graph MACs are counted on (and ORT/OpenVINO run, for checkpoints)
    compute_source: str
    module: Any = None  # torch module, for checkpoints and torch.export programs
    quantized: bool = False
    runtimes: list[str] = field(default_factory=list)


def parse_model_arg(arg: str) -> tuple[Path, list[str] | None]:
    """``MODEL`` or ``MODEL@runtime[,runtime]``: the part after the last @ picks that model's runtimes."""
    path = Path(arg)
    if path.exists() or "@" not in arg:
        return path, None
    file, _, names = arg.rpartition("@")
    runtimes = [n.strip() for n in names.split(",") if n.strip()]
    if not runtimes:
        raise BenchInputError(
            f"'{arg}' names no runtime after @; fix: write e.g. {file}@onnxruntime,openvino"
        )
    return Path(file), runtimes


def unique_names(paths: list[Path]) -> list[str]:
    """File names, with as many parent folders as needed to tell models apart in a report."""
    for depth in range(1, 1 + max(len(p.parts) for p in paths)):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    raise BenchInputError("the same model file is given twice; fix: list each model once")


def load_model(path: Path, name: str, tmp_dir: Path, opset: int = 17) -> BenchModel:
    path = Path(path)
    if not path.is_file():
        raise BenchInputError(
            f"model file not found: {path}; fix: give the path of a .onnx, .xml or model.pt"
        )
    found = kind_of_suffix(path.suffix)
    if found is None:
        raise BenchInputError(
            f"{path} is not a model file edgepipe bench reads (suffix '{path.suffix}'); fix: give an ONNX "
            ".onnx, an OpenVINO .xml, an edgepipe model.pt checkpoint or a torch.export .pt2"
        )
    loader = {"onnx": _onnx, "openvino-ir": _ir, "checkpoint": _checkpoint, "torch-export": _exported}[
        found.name
    ]
    return loader(path, name, tmp_dir, opset)


def _onnx(path: Path, name: str, tmp_dir: Path, opset: int) -> BenchModel:
    import onnx

    from edgepipe.runtimes.onnxruntime import op_kind

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise BenchInputError(
            f"{path} is not an ONNX model; fix: give a file written by torch.onnx.export"
        ) from None
    if not proto.graph.node:
        raise BenchInputError(
            f"{path} is not an ONNX model (no graph); fix: give a file written by torch.onnx.export"
        )
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise BenchInputError(
            f"{path} is not a single-input ONNX classifier ({len(inputs)} inputs); fix: export one image "
            "input"
        )
    dims = tuple(d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim)
    meta = _decode({p.key: p.value for p in proto.metadata_props})
    return BenchModel(
        name,
        path,
        "onnx",
        dims,
        meta,
        "ONNX metadata_props" if meta else None,
        path,
        "ONNX graph",
        quantized=any(op_kind(n.op_type) in ("int8", "convert") for n in proto.graph.node),
    )


def _ir(path: Path, name: str, tmp_dir: Path, opset: int) -> BenchModel:
    from edgepipe.runtimes.openvino import _ov, is_quantized, read_model

    model = read_model(_ov().Core(), path)
    if len(model.inputs) != 1:
        raise BenchInputError(
            f"{path} has {len(model.inputs)} inputs; fix: convert a single-input classifier"
        )
    partial = model.inputs[0].get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else None for d in partial)
    framework = model.get_rt_info()["framework"] if model.has_rt_info(["framework"]) else {}
    meta = _decode({k: framework[k].astype(str) for k in ("classes", "preprocessing") if k in framework})
    sibling = path.with_suffix(".onnx")
    meta_source = "OpenVINO rt_info (from the source ONNX metadata)" if meta else None
    if not meta and sibling.is_file():
        from edgepipe.quant.export import read_metadata

        meta = {k: v for k, v in read_metadata(sibling).items() if k in ("classes", "preprocessing")}
        meta_source = f"sibling {sibling.name} metadata" if meta else None
    found = sibling.is_file()
    compute_note = (
        f"sibling {sibling.name} (assumed to be the IR's source)"
        if found
        else "unknown: no .onnx beside the IR to count MACs on"
    )
    sibling_onnx = sibling if found else None
    return BenchModel(name, path, "openvino-ir", dims, meta, meta_source, sibling_onnx, compute_note,
                      quantized=is_quantized(model))  # fmt: skip


def load_checkpoint(path: Path) -> tuple[dict[str, Any], Any, bool]:
    """An edgepipe checkpoint read safely and its torch model rebuilt: (checkpoint, module, quantized).

    A qat checkpoint rebuilds the prepared fake-quant model (what QAT trained), a finetune one the float
    model; both in eval mode."""
    from edgepipe.models.checkpoint import read_checkpoint

    try:  # read safely: a model file from elsewhere must not run code on load
        ckpt = read_checkpoint(path)
    except ModelError as exc:
        raise BenchInputError(str(exc)) from None
    quantized = "quant" in ckpt
    try:
        if quantized:
            from edgepipe.models.build import load_qat_model

            module = load_qat_model(ckpt)
        else:
            from edgepipe.models.build import rebuild

            module = rebuild(ckpt).eval()
    except (ModelError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise BenchInputError(
            f"{path}: cannot rebuild the model ({str(exc).splitlines()[0][:160]}); fix: use a checkpoint "
            "written by this edgepipe version"
        ) from None
    return ckpt, module, quantized


def _checkpoint(path: Path, name: str, tmp_dir: Path, opset: int) -> BenchModel:
    ckpt, module, quantized = load_checkpoint(path)
    pre = ckpt["preprocessing"]
    meta = {"classes": list(ckpt["classes"]), "preprocessing": pre}
    onnx_path, source = _export_checkpoint(
        module, quantized, pre, meta, tmp_dir / f"{name.replace('/', '_')}.onnx", opset
    )
    return BenchModel(
        name,
        path,
        "checkpoint",
        (None, *pre["input_size"]),
        meta,
        "checkpoint",
        onnx_path,
        source,
        module,
        quantized,
    )


def _export_checkpoint(module, quantized: bool, pre: dict, meta: dict, out: Path, opset: int):
    """A temporary ONNX of the checkpoint: the graph MACs are counted on, and what ORT/OpenVINO run."""
    from edgepipe.quant.export import export_onnx

    try:
        if quantized:
            from edgepipe.quant.qdq import to_qdq_module

            export_onnx(to_qdq_module(module), out, pre["input_size"], meta, opset, qdq=True)
        else:
            export_onnx(module, out, pre["input_size"], meta, opset)
    except Exception as exc:  # noqa: BLE001 - export can fail many ways; compute is then reported unknown
        log.warning("%s: ONNX export failed (%s); compute and ORT/OpenVINO unavailable", out.stem, exc)
        return None, f"unknown: ONNX export failed ({type(exc).__name__})"
    return out, "temporary ONNX export of the checkpoint" + (" (QDQ)" if quantized else "")


def _exported(path: Path, name: str, tmp_dir: Path, opset: int) -> BenchModel:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception:  # noqa: BLE001 - torch raises assorted errors for a corrupt archive
        raise BenchInputError(
            f"{path} is not a torch.export program; fix: save it with torch.export.save"
        ) from None
    user_inputs = set(program.graph_signature.user_inputs)
    shapes = [
        n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs
    ]
    if len(shapes) != 1:
        raise BenchInputError(f"{path} has {len(shapes)} inputs; fix: export a single-input classifier")
    dims = tuple(d if isinstance(d, int) else None for d in shapes[0])
    sibling = path.with_suffix(".onnx")
    meta: dict[str, Any] = {}
    if sibling.is_file():
        from edgepipe.quant.export import read_metadata

        meta = {k: v for k, v in read_metadata(sibling).items() if k in ("classes", "preprocessing")}
    return BenchModel(
        name,
        path,
        "torch-export",
        dims,
        meta,
        f"sibling {sibling.name} metadata" if meta else None,
        sibling if sibling.is_file() else None,
        f"sibling {sibling.name} (assumed to be exported from the same model)"
        if sibling.is_file()
        else "unknown: no .onnx beside the .pt2 to count MACs on",
        program.module(),
    )


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    out = {}
    for key in ("classes", "preprocessing"):
        if key in raw:
            try:
                out[key] = json.loads(raw[key])
            except json.JSONDecodeError:
                log.warning("metadata '%s' is not JSON; ignored", key)
    return out


def select_runtimes(model: BenchModel, per_model: list[str] | None, requested: list[str] | None) -> list[str]:
    """``MODEL@rt`` wins, else ``--runtime`` (skipping kinds a model cannot run on), else the natural one."""
    can = model_kind(model.kind).runtimes
    if per_model is not None:
        bad = [r for r in per_model if r not in can]
        if bad:
            raise BenchInputError(
                f"{model.name} ({model.kind}) cannot run on {', '.join(bad)}; fix: use {' or '.join(can)}"
            )
        return per_model
    if requested is None:
        return [model_kind(model.kind).natural]
    chosen = [r for r in requested if r in can]
    if not chosen:
        raise BenchInputError(
            f"{model.name} ({model.kind}) runs on none of {', '.join(requested)}; fix: add --runtime "
            f"{can[0]} or write {model.path}@{can[0]}"
        )
    return chosen


def check_runtimes_installed(names: set[str]) -> None:
    """Fail before any timing, not after the first model, when a backend is missing."""
    import importlib.util

    for name in sorted(names):
        package = runtime_spec(name).package
        if importlib.util.find_spec(package) is None:
            raise RuntimeUnavailable(f"runtime '{name}' is not installed; fix: pip install {package}")


def build_runtime(model: BenchModel, runtime: str, threads: int, precision: str, hint: str):
    """The runtime loaded with the options it takes: a torch module for runtimes that load torch files,
    else the model file (a checkpoint's temporary ONNX export)."""
    from edgepipe.runtimes import get_runtime

    spec = runtime_spec(runtime)
    given = {"threads": threads, "precision": precision, "hint": hint, "input_shape": model.input_shape}
    options = {k: v for k, v in given.items() if k in spec.options}
    if model.module is not None and model.path.suffix.lower() in spec.suffixes:
        return get_runtime(runtime, model.module, **options)
    path = model.onnx_path if model.kind == "checkpoint" else model.path
    if path is None:
        raise BenchInputError(f"{model.name}: no ONNX export to run on {runtime}; fix: bench it on torch")
    return get_runtime(runtime, path, **options)


def compute(model: BenchModel) -> dict[str, Any]:
    """MACs counted on the model's ONNX graph; unknown (with the reason) rather than guessed."""
    if model.onnx_path is None:
        return {"source": model.compute_source, **dict.fromkeys(COMPUTE_KEYS)}
    try:
        return graph_compute(model.onnx_path, model.compute_source)
    except BenchInputError as exc:
        log.warning("%s: MACs not counted: %s", model.name, exc)
        return {"source": f"unknown: {exc}", **dict.fromkeys(COMPUTE_KEYS)}


COMPUTE_KEYS = ("macs", "gmacs", "gflops", "params", "int8_macs", "int8_mac_share", "by_op_type")


def graph_compute(onnx_path: Path, source: str = "ONNX graph") -> dict[str, Any]:
    """The compute block of a bench document: MACs, params and INT8 share counted on the graph, batch 1."""
    from edgepipe.bench.macs import count_macs

    c = count_macs(onnx_path, batch=1)
    return {"source": source, **{k: c[k] for k in COMPUTE_KEYS}}


def thop_check(model: BenchModel, graph_macs: int | None, input_size: list[int] | None) -> dict[str, Any]:
    """thop's count of a float torch model beside the graph count: a cross-check, not the reported number."""
    if model.kind != "checkpoint":
        return {"skipped": "no float nn.Module to hook (thop needs an edgepipe checkpoint)"}
    if model.quantized:
        return {"skipped": "thop cannot see quantized/fake-quant modules; the graph count is used"}
    if graph_macs is None or input_size is None:
        return {"skipped": "no graph count to compare with"}
    try:
        from edgepipe.bench.macs import thop_macs

        thop = thop_macs(model.module, (1, *input_size))
    except ImportError:
        return {"skipped": "thop is not installed"}
    return {
        "thop_macs": thop,
        "graph_macs": graph_macs,
        "ratio_graph_over_thop": graph_macs / thop if thop else None,
    }
