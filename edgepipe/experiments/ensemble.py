"""``edgepipe ensemble``: finished runs combined into ONE ONNX graph (FP32 and INT8), benched beside them.

Members are run folders that went through export. They must share classes, preprocessing and split: the
linear combiner learns on the train split and is chosen on the validation split, and a member trained on
another split would have seen those images. ``mean`` averages the members' softmax outputs. ``linear``
learns a linear layer over the concatenated logits; its candidates include each member alone and the plain
logit average, so the one chosen on validation scores at least the best member there, by construction.

The composed graph holds each member's graph under a prefix (m0_, m1_, ...) fed from one shared input, and
the combiner after them (a float MatMul or Softmax/Sum on the logits); the INT8 ensemble composes the members'
INT8 (QDQ) graphs with a linear layer learnt and chosen on those graphs' own logits, so it too scores at least
its best member on validation. Member logits come from their exported graphs through ONNX Runtime, and each
exported ensemble is checked against its combiner applied to them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe import __version__
from edgepipe.artifacts import atomic_path, atomic_write_json, read_manifest
from edgepipe.bench.measure import Settings as BenchSettings
from edgepipe.errors import DataError, EdgepipeError, ModelError, StageError
from edgepipe.runtimes.registry import runtime_for
from edgepipe.train.metrics import agreement

log = logging.getLogger(__name__)

COMBINERS = ("mean", "linear")
PENALTIES = (1e-3, 1e-2, 1e-1)  # linear: L2 pull of the weights towards the logit average
STEPS, EVERY = 300, 50  # linear: full-batch Adam steps; a candidate snapshot every EVERY steps


@dataclass
class Member:
    name: str
    run_dir: Path
    fp32: Path
    int8: Path
    split: Path
    split_sha: str
    meta: dict[str, Any]


def load_member(run_dir: Path) -> Member:
    from edgepipe.quant.export import read_metadata

    run_dir = Path(run_dir)
    export, split = read_manifest(run_dir / "export"), read_manifest(run_dir / "split")
    if export is None or split is None:
        raise StageError(
            f"{run_dir} is not a finished run (no export/manifest.json); fix: give run folders that "
            "edgepipe build took through export, e.g. artifacts/smoke"
        )
    fp32 = run_dir / "export" / export["outputs"]["onnx_fp32"]["file"]
    return Member(
        name=run_dir.name,
        run_dir=run_dir,
        fp32=fp32,
        int8=run_dir / "export" / export["outputs"]["onnx_int8"]["file"],
        split=run_dir / "split" / split["outputs"]["split"]["file"],
        split_sha=split["outputs"]["split"]["sha256"],
        meta=read_metadata(fp32),
    )


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_members(members: list[Member]) -> None:
    """Refuse, in one line, members that cannot be combined into one graph on one split."""
    if len(members) < 2:
        raise ModelError("an ensemble needs at least two runs; fix: give two or more run folders")
    if len({m.run_dir.resolve() for m in members}) < len(members):
        raise ModelError("a run is given twice; fix: give each member run once")
    first = members[0]
    for m in members[1:]:
        for key, what in (("classes", "classes"), ("preprocessing", "preprocessing")):
            if m.meta.get(key) != first.meta.get(key):
                raise ModelError(
                    f"{m.name} and {first.name} differ in {what} ({_short(m.meta.get(key))} vs "
                    f"{_short(first.meta.get(key))}); fix: combine runs of the same data and input size"
                )
        if m.split_sha != first.split_sha:
            raise DataError(
                f"{m.name} and {first.name} were trained on different splits; fix: build them with the same "
                "data section and seed (e.g. as variants of one edgepipe sweep)"
            )


def _logits(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    from edgepipe.runtimes import get_runtime
    from edgepipe.runtimes.predict import runtime_logits

    return runtime_logits(get_runtime(_runtime(), path, threads=threads), x)


def _runtime() -> str:
    """Members and ensembles are composed and run as ONNX graphs: on the runtime that runs every .onnx."""
    return runtime_for("onnx").name


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _scores(out: np.ndarray, y: np.ndarray, probs: bool) -> tuple[float, float]:
    """(top-1 %, mean negative log-likelihood) of logits, or of probabilities when ``probs``."""
    p = out if probs else softmax(out)
    nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return 100.0 * float((out.argmax(1) == y).mean()), nll


@dataclass
class Combiner:
    kind: str  # mean | linear
    weight: np.ndarray | None = None  # linear: (members * classes, classes)
    bias: np.ndarray | None = None
    chosen: str = ""
    candidates: list[dict] | None = None

    def apply(self, logits: list[np.ndarray]) -> np.ndarray:
        """The combiner in numpy: what the exported graph must compute."""
        if self.kind == "mean":
            return np.mean([softmax(z) for z in logits], axis=0)
        return np.concatenate(logits, 1) @ self.weight + self.bias

    @property
    def output(self) -> str:
        return "probs" if self.kind == "mean" else "logits"


def fit_linear(
    train: list[np.ndarray],
    y_train: np.ndarray,
    val: list[np.ndarray],
    y_val: np.ndarray,
    names: list[str],
    seed: int = 0,
) -> Combiner:
    """A linear layer over concatenated logits, learnt on train and chosen on val among: each member alone,
    the logit average, and Adam snapshots pulled towards that average with a few L2 strengths. The members
    are candidates, so the chosen layer's val top-1 is at least the best member's."""
    import torch

    m, c = len(train), train[0].shape[1]
    eye = np.eye(c, dtype=np.float32)
    cands: list[tuple[str, np.ndarray, np.ndarray]] = []
    for i, name in enumerate(names):
        w = np.zeros((m * c, c), np.float32)
        w[i * c : (i + 1) * c] = eye
        cands.append((f"member {name} alone", w, np.zeros(c, np.float32)))
    w0 = np.tile(eye / m, (m, 1))
    cands.append(("logit average", w0, np.zeros(c, np.float32)))
    zt = torch.from_numpy(np.concatenate(train, 1).astype(np.float32))
    yt = torch.from_numpy(y_train.astype(np.int64))
    torch.manual_seed(seed)
    for penalty in PENALTIES:
        w = torch.tensor(w0, requires_grad=True)
        b = torch.zeros(c, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.01)
        anchor = torch.from_numpy(w0)
        for step in range(1, STEPS + 1):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(zt @ w + b, yt) + penalty * ((w - anchor) ** 2).sum()
            loss.backward()
            opt.step()
            if step % EVERY == 0:
                cands.append(
                    (
                        f"trained (L2 {penalty:g}, step {step})",
                        w.detach().numpy().copy(),
                        b.detach().numpy().copy(),
                    )
                )
    zv = np.concatenate(val, 1)
    table, best, best_score = [], 0, None
    for i, (name, w, b) in enumerate(cands):
        top1, nll = _scores(zv @ w + b, y_val, probs=False)
        table.append({"candidate": name, "val_top1": top1, "val_nll": nll})
        score = (top1, -nll)
        if best_score is None or score > best_score:  # ties keep the earlier (simpler) candidate
            best, best_score = i, score
    name, w, b = cands[best]
    log.info("ensemble linear: chose %s (val top-1 %.2f)", name, table[best]["val_top1"])
    return Combiner("linear", w, b, chosen=name, candidates=table)


def compose(paths: list[Path], combiner: Combiner, meta: dict[str, Any], out: Path) -> Path:
    """One graph: the members under prefixes m0_, m1_... fed from one input, then the combiner."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.compose import add_prefix

    from edgepipe.quant.export import INPUT, set_metadata

    models = [onnx.load(str(p)) for p in paths]
    opsets: dict[str, int] = {}
    for p, mdl in zip(paths, models, strict=True):
        for o in mdl.opset_import:
            if opsets.setdefault(o.domain, o.version) != o.version:
                raise ModelError(
                    f"{p} uses ONNX opset {o.version} of domain '{o.domain or 'ai.onnx'}', another member "
                    f"{opsets[o.domain]}; fix: export the members with the same export.opset"
                )
    nodes, inits, infos, outs = [], [], [], []
    for i, mdl in enumerate(models):
        g = add_prefix(mdl, f"m{i}_").graph
        weights = {t.name for t in g.initializer}
        feed = next(v for v in g.input if v.name not in weights)
        nodes.append(helper.make_node("Identity", [INPUT], [feed.name], name=f"m{i}_feed"))
        nodes += list(g.node)
        inits += list(g.initializer)
        infos += list(g.value_info)
        outs.append(g.output[0].name)
    n_cls = len(meta["classes"])
    if combiner.kind == "mean":
        probs = [f"ens_p{i}" for i in range(len(outs))]
        nodes += [helper.make_node("Softmax", [o], [p], axis=1) for o, p in zip(outs, probs, strict=True)]
        nodes.append(helper.make_node("Sum", probs, ["ens_sum"]))
        inits.append(numpy_helper.from_array(np.array(1.0 / len(outs), np.float32), "ens_scale"))
        nodes.append(helper.make_node("Mul", ["ens_sum", "ens_scale"], [combiner.output]))
    else:
        inits.append(numpy_helper.from_array(combiner.weight.astype(np.float32), "ens_weight"))
        inits.append(numpy_helper.from_array(combiner.bias.astype(np.float32), "ens_bias"))
        nodes.append(helper.make_node("Concat", outs, ["ens_concat"], axis=1))
        nodes.append(helper.make_node("MatMul", ["ens_concat", "ens_weight"], ["ens_matmul"]))
        nodes.append(helper.make_node("Add", ["ens_matmul", "ens_bias"], [combiner.output]))
    source_input = next(v for v in models[0].graph.input if v.name == INPUT)
    graph = helper.make_graph(
        nodes,
        "edgepipe_ensemble",
        [source_input],
        [helper.make_tensor_value_info(combiner.output, TensorProto.FLOAT, ["batch", n_cls])],
        initializer=inits,
        value_info=infos,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], producer_name="edgepipe"
    )
    model.ir_version = max(m.ir_version for m in models)
    set_metadata(model, meta)
    onnx.checker.check_model(model)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return out


def split_arrays(member: Member, part: str):
    from edgepipe.data.loaders import SplitData
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.recipe import DataConfig

    source = json.loads(member.split.read_text())["source"]
    cfg = DataConfig(dataset=source.get("dataset"), root=source.get("root"))
    pre = Preprocessing.from_dict(member.meta["preprocessing"])
    return SplitData(member.split, cfg, pre, seed=0).arrays(part)


def build_ensemble(
    runs: list[Path], combine: str, out: Path, bench: BenchSettings | None = None
) -> dict[str, Any]:
    """Combine, export FP32 and INT8, verify the graphs, bench every member and the ensemble; returns the
    report (also written to OUT/report.json, report.md, ensemble.json and a plot)."""
    if combine not in COMBINERS:
        raise EdgepipeError(f"--combine {combine}: unknown; fix: use one of {', '.join(COMBINERS)}")
    bench = bench or BenchSettings()
    members = [load_member(r) for r in runs]
    check_members(members)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [m.name for m in members]
    first = members[0]
    parts = {part: split_arrays(first, part) for part in ("train", "val", "test")}
    y_val = parts["val"][1]
    val_logits = {
        prec: [_logits(getattr(m, prec), parts["val"][0], bench.threads) for m in members]
        for prec in ("fp32", "int8")
    }
    combiners: dict[str, Combiner] = {}
    for prec in ("fp32", "int8"):
        if combine == "linear":  # each precision's layer learns its own members' logits: the INT8 members are
            # the QAT models, trained further than the FP32 ones, whose logits another layer would mis-weigh
            train = [_logits(getattr(m, prec), parts["train"][0], bench.threads) for m in members]
            combiners[prec] = fit_linear(train, parts["train"][1], val_logits[prec], y_val, names)
        else:
            combiners[prec] = Combiner("mean", chosen="mean of the members' softmax outputs")
    graphs, checks = {}, {}
    for prec, combiner in combiners.items():
        meta = {
            "edgepipe_version": __version__,
            "arch": "ensemble",
            "members": names,
            "combine": combine,
            "output": combiner.output,
            "classes": first.meta["classes"],
            "preprocessing": first.meta["preprocessing"],
            "precision": prec,
        }
        graphs[prec] = compose([getattr(m, prec) for m in members], combiner, meta, out / f"{prec}.onnx")
        exported = _logits(graphs[prec], parts["val"][0], bench.threads)
        expected = combiner.apply(val_logits[prec])
        checks[prec] = {
            "val_top1": _scores(exported, y_val, probs=combine == "mean")[0],
            "agreement_with_combiner": agreement(exported.argmax(1), expected.argmax(1)),
            "max_abs_diff": float(np.abs(exported - expected).max()),
        }
    val_members = {
        prec: {n: _scores(z, y_val, probs=False)[0] for n, z in zip(names, val_logits[prec], strict=True)}
        for prec in ("fp32", "int8")
    }
    if checks["fp32"]["max_abs_diff"] > 1e-3:
        raise StageError(
            f"the exported FP32 ensemble differs from its combiner by {checks['fp32']['max_abs_diff']:.3g} "
            "on val; this is a bug in edgepipe"
        )
    summary = {
        "members": [{"name": m.name, "run": str(m.run_dir)} for m in members],
        "combine": combine,
        "chosen": {p: c.chosen for p, c in combiners.items()},
        "candidates": {p: c.candidates for p, c in combiners.items()},
        "val_images": int(len(y_val)),
        "val_top1": {"members": val_members, "ensemble": {p: checks[p]["val_top1"] for p in checks}},
        "export_check": checks,
        "outputs": {p: g.name for p, g in graphs.items()},
    }
    atomic_write_json(out / "ensemble.json", summary)
    return _bench(members, graphs, parts["test"], bench, summary, out)


def _bench(members, graphs, test, settings: BenchSettings, summary: dict, out: Path) -> dict:
    """Every member and the ensemble, both precisions, over the test split through the measurement core
    (edgepipe.bench.measure: paired rounds, speed-up against the fastest FP32 graph)."""
    from edgepipe.artifacts import atomic_write_text, sha256_file
    from edgepipe.bench.accuracy import score_logits
    from edgepipe.bench.harness import model_size_mb
    from edgepipe.bench.loading import graph_compute
    from edgepipe.bench.measure import Entry, measure
    from edgepipe.bench.report import drop_samples, markdown, write_plots
    from edgepipe.runtimes import get_runtime
    from edgepipe.runtimes.predict import runtime_logits

    x, y = test
    runtime = _runtime()
    meta = members[0].meta
    input_size = list(meta["preprocessing"]["input_size"])
    models = [(f"{m.name} {p}", getattr(m, p), p) for m in members for p in ("fp32", "int8")]
    models += [(f"ensemble {p}", g, p) for p, g in graphs.items()]
    entries, docs = [], []
    for label, path, prec in models:
        compute = graph_compute(path)
        entries.append(
            Entry(
                model=label,
                file=path,
                kind="onnx",
                runtime=runtime,
                build=lambda path=path: get_runtime(runtime, path, threads=settings.threads),
                input_size=input_size,
                compute=compute,
                is_float=prec == "fp32",
                score=lambda rt: score_logits(runtime_logits(rt, x), y),
            )
        )
        docs.append(
            {
                "name": label,
                "file": str(path),
                "kind": "onnx",
                "sha256": sha256_file(path),
                "size_mb": round(model_size_mb(path), 3),
                "input_size": input_size,
                "preprocessing": meta["preprocessing"],
                "preprocessing_source": "ONNX metadata_props",
                "classes": meta["classes"],
                "classes_source": "ONNX metadata_props",
                "runtimes": [runtime],
                "compute": compute,
            }
        )
    measured = measure(entries, replace(settings, batch_sizes=[1], keep_samples=True))
    rows = measured.rows
    source = json.loads(members[0].split.read_text())["source"]
    val = summary["val_top1"]
    notes = [
        f"combine: {summary['combine']}; chosen on {summary['val_images']} val images, per precision (on "
        f"that precision's members): FP32 {summary['chosen']['fp32']}; INT8 {summary['chosen']['int8']}"
    ]
    for prec, members_top1 in val["members"].items():
        best = max(members_top1, key=members_top1.get)
        notes.append(f"val top-1 {prec.upper()}: ensemble {val['ensemble'][prec]:.2f}% vs best member {best} "
                     f"{members_top1[best]:.2f}%")  # fmt: skip
    notes.append("an ensemble's GMACs are its members' plus the combiner's, counted on its one graph")
    plots = {k: p.name for k, p in write_plots(rows, out).items()}
    drop_samples(rows)
    doc = measured.document(
        settings={"runtimes": [runtime], "precision": "f32", "hint": "LATENCY", "gates": []},
        data={
            "data": source.get("dataset") or str(source.get("root")),
            "kind": "test split of the members' runs",
            "classes": meta["classes"],
            "images": int(len(y)),
            "available_images": int(len(y)),
        },
        models=docs,
        gates=[],
        notes=notes,
        plots=plots,
        recipe="ensemble",
        stages={"ensemble": {"metrics": summary}},
    )
    atomic_write_json(out / "report.json", doc)
    atomic_write_text(out / "report.md", markdown(doc))
    return doc
