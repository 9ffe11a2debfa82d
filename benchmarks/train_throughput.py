"""Does our training loop run at this machine's speed? Auto's choice vs the plain loop vs every candidate.

For finetune (the float model) and QAT (its fake-quant twin), with the recipe's loader, optimiser, schedule
and loss (``training_parts``, as the stages build them):

- ``plain``: a hand-written NCHW float32 loop (zero_grad, forward, loss, backward, step);
- ``ours``: edgepipe's ``train_one_epoch`` run as ``fit`` runs it, with what autotune chose for the recipe's
  ``channels_last`` / ``compile`` / ``amp`` settings and planned steps (its decision and timings recorded);
- one entry per candidate autotune knows here (NCHW, channels-last, compiled, bf16 with native bf16), each
  in our loop; the fastest is the "best single candidate", the ceiling auto should reach.

Each entry trains its own copy of the model; entries alternate within each round, the order reversed every
other round, and images/s is the median over rounds. A compile is paid once, before the rounds, and
reported apart. The CPU (model, family/model, ISA flags) is named, and the results are written per CPU:

    .venv/bin/python benchmarks/train_throughput.py [--recipe recipes/mnv3_qat.yaml] [--stages finetune qat]
        [--rounds 6] [--batches-per-round 10] [--threads 2] [--out benchmarks/results]

-> DIR/train_throughput_<cpu>.json and .md (e.g. train_throughput_amd-epyc-zen5.md). Targets: ours at least
1.5x plain on finetune at the recipe's settings, and never below plain (within 3%).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

from edgepipe.artifacts import atomic_write_json, atomic_write_text
from edgepipe.bench.timing import cpu_name, environment
from edgepipe.recipe import Recipe, load_recipe

log = logging.getLogger("train_throughput")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SPEEDUP_TARGET = 1.5
NOT_SLOWER = 0.97  # ours/plain below this is "slower than plain"; above it, within the rounds' noise


def build_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe with the benchmark's overrides (arch, size, batch size: none by default), no hub weights."""
    raw = load_recipe(args.recipe).model_dump(mode="json", exclude_unset=True)
    data = {"num_workers": args.num_workers}
    data.update({k: v for k, v in (("image_size", args.image_size), ("batch_size", args.batch_size)) if v})
    raw["data"] = {**raw["data"], **data}
    raw["model"] = {**raw.get("model", {}), "pretrained": "none"}
    if args.arch:
        raw["model"]["arch"] = args.arch
    if raw["model"].get("arch") not in (None, "mobilenet_v3_large", "mobilenet_v3_small"):
        raw["model"].pop("width_mult", None)
    return Recipe.model_validate(raw)


def write_split(recipe: Recipe, folder: Path) -> Path:
    """split.json as the split stage writes it (without the statistics, which training does not read)."""
    from edgepipe.data.sources import open_source
    from edgepipe.data.split import make_split

    d = recipe.data
    listing = open_source(d.dataset, d.root).listing()
    split = make_split(listing, recipe.seed, d.val_fraction, d.test_fraction, d.limit_per_class)
    doc = {
        "source": {"dataset": d.dataset, "root": str(d.root) if d.root else None},
        "classes": listing.classes,
        **{part: [list(s) for s in samples] for part, samples in split.items()},
    }
    path = folder / "split.json"
    atomic_write_json(path, doc)
    return path


def plain_epoch(model, loader, criterion, optimizer, device, batches: int) -> None:
    """The hand-written baseline: nothing but the training step."""
    model.train()
    for images, labels in islice(loader, batches):
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()


def stage_model(stage: str, recipe: Recipe, classes: int):
    """The float model (finetune) or its prepared fake-quant twin with the recipe's epoch-0 QAT state."""
    from edgepipe.models.build import build_model

    if stage == "finetune":
        return build_model(recipe.model, classes)[0]
    from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat

    model, _ = build_model(recipe.model, classes, quantizable=True)
    prepare_qat(model)
    if recipe.qat.freeze_bn_epoch == 0:
        freeze_bn_stats(model)
    if recipe.qat.freeze_observer_epoch == 0:
        freeze_observers(model)
    return model


def measure_stage(stage: str, recipe: Recipe, data, dev, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from edgepipe.train import autotune
    from edgepipe.train.loop import train_one_epoch
    from edgepipe.train.optim import build_scheduler
    from edgepipe.train.trainer import training_parts

    cfg = getattr(recipe, stage)
    amp = cfg.amp if stage == "finetune" else "off"  # QAT trains in float32
    model = stage_model(stage, recipe, len(data.classes)).to(dev)
    loader, optimizer, _, criterion = training_parts(model, data, recipe, cfg, dev)
    steps = len(loader) if cfg.max_batches_per_epoch is None else min(len(loader), cfg.max_batches_per_epoch)
    compile_setting = cfg.compile if args.compile else "off"
    settings = autotune.Settings(channels_last=cfg.channels_last, compile=compile_setting, amp=amp)
    decision = autotune.choose(model, optimizer, criterion, loader, dev, settings, cfg.epochs * steps)
    every = autotune.candidates(autotune.Settings("auto", "auto" if args.compile else "off",
                                                  "auto" if stage == "finetune" else "off"), dev)

    def entry(cand, plain: bool = False) -> dict[str, Any]:
        m, opt = copy.deepcopy((model, optimizer))
        if cand.channels_last:
            m.to(memory_format=torch.channels_last)
        net = autotune.compile_module(m) if cand.compile else m
        if plain:
            return {"run": lambda n: plain_epoch(m, loader, criterion, opt, dev, n)}
        scaler = torch.amp.GradScaler(dev.type) if cand.amp == "fp16" else None
        sched = build_scheduler(opt, cfg, steps)
        return {"run": lambda n: train_one_epoch(net, loader, criterion, opt, sched, dev, scaler, n,
                                                 description=stage, grad_clip_norm=cfg.grad_clip_norm,
                                                 amp_dtype=cand.dtype(), channels_last=cand.channels_last)}

    entries = {"plain": entry(autotune.Candidate(), plain=True), "ours": entry(decision.candidate)}
    entries.update({c.name: entry(c) for c in every})
    for name, e in list(entries.items()):  # warm-up (a compile happens here, timed apart)
        t0 = time.perf_counter()
        try:
            e["run"](args.warmup_batches)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run here is reported, not fatal
            log.warning("%s %s failed: %s", stage, name, str(exc).splitlines()[0] if str(exc) else exc)
            e["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        e["warmup_s"], e["ips"] = time.perf_counter() - t0, []
    alive = [n for n, e in entries.items() if "error" not in e]
    for i in range(args.rounds):
        for name in alive if i % 2 == 0 else reversed(alive):
            t0 = time.perf_counter()
            entries[name]["run"](args.batches_per_round)
            ips = args.batches_per_round * loader.batch_size / (time.perf_counter() - t0)
            entries[name]["ips"].append(ips)
            log.info("%s round %d %-24s %.1f images/s", stage, i, name, ips)
    loops = {}
    for name, e in entries.items():
        if "error" in e:
            loops[name] = {"error": e["error"]}
            continue
        loops[name] = {"images_per_s": statistics.median(e["ips"]), "rounds": [round(x, 2) for x in e["ips"]],
                       "warmup_s": round(e["warmup_s"], 2)}
    ranked = [n for n in loops if n not in ("plain", "ours") and "images_per_s" in loops[n]]
    best = max(ranked, key=lambda n: loops[n]["images_per_s"]) if ranked else None
    plain_ips, ours_ips = loops["plain"]["images_per_s"], loops["ours"].get("images_per_s", float("nan"))
    return {
        "loops": loops,
        "autotune": decision.record,
        "best_single": best,
        "ours_vs_plain": ours_ips / plain_ips,
        "best_vs_plain": loops[best]["images_per_s"] / plain_ips if best else None,
        "ours_vs_best": ours_ips / loops[best]["images_per_s"] if best else None,
        "planned_steps": cfg.epochs * steps,
    }


def markdown(doc: dict[str, Any]) -> str:
    s, env, cpu = doc["settings"], doc["environment"], doc["cpu"]
    lines = [
        f"# Training throughput on {cpu['model_name']} ({doc['cpu_slug']})",
        "",
        f"{s['arch']} at {s['image_size']} px, batch {s['batch_size']}, {s['threads']} threads, "
        f"{s['num_workers']} loader workers, data and optimiser from {s['recipe']}; median images/s over "
        f"{s['rounds']} alternating rounds of {s['batches_per_round']} batches per entry. CPU family "
        f"{cpu['family']} model {cpu['model']}; ISA: {', '.join(env['isa_flags']) or 'none listed'}; "
        f"torch {env['packages']['torch']}.",
        "",
    ]
    for stage, r in doc["stages"].items():
        a = r["autotune"]
        lines += [
            f"## {stage}",
            "",
            f"Auto chose **{a['chosen']}** ({a.get('source')}: {a.get('reason')}) for "
            f"{r['planned_steps']} planned steps.",
            "",
            "| loop | images/s (median) | rounds | warm-up s (compile) |",
            "|---|---|---|---|",
        ]
        for name, loop in r["loops"].items():
            if "error" in loop:
                lines.append(f"| {name} | failed: {loop['error']} | | |")
                continue
            rounds = ", ".join(f"{x:.0f}" for x in loop["rounds"])
            lines.append(f"| {name} | {loop['images_per_s']:.1f} | {rounds} | {loop['warmup_s']:.1f} |")
        best = f"{r['best_vs_plain']:.2f}x ({r['best_single']})" if r["best_single"] else "n/a"
        ours_best = f"{r['ours_vs_best']:.2f}" if r["ours_vs_best"] else "n/a"
        lines += [
            "",
            f"- ours / plain: **{r['ours_vs_plain']:.2f}x**; best single candidate / plain: {best}; "
            f"ours / best: {ours_best}",
            "",
        ]
    v = doc["verdict"]
    lines += [
        f"- finetune ours >= {SPEEDUP_TARGET}x plain: {'met' if v['finetune_speedup_ok'] else 'NOT met'}; "
        f"never slower than plain (>= {NOT_SLOWER}x, every stage): "
        f"{'met' if v['never_slower_ok'] else 'NOT met'}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "mnv3_qat.yaml"), help="data/optimiser source")
    p.add_argument("--stages", nargs="+", default=["finetune", "qat"], choices=["finetune", "qat"])
    p.add_argument("--arch", default=None, help="default: the recipe's")
    p.add_argument("--image-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--rounds", type=int, default=6, help="alternations; even numbers balance the order")
    p.add_argument("--batches-per-round", type=int, default=10)
    p.add_argument("--warmup-batches", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (the recipes' default: 0)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="leave torch.compile out: no compiled entries, and compile: off for auto's choice")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("EDGEPIPE_PROGRESS", "0")  # no bars redrawn inside timed loops

    import torch

    from edgepipe.data.loaders import SplitData
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.stages.base import seed_everything
    from edgepipe.train import autotune
    from edgepipe.train.trainer import device

    torch.set_num_threads(args.threads)
    recipe = build_recipe(args)
    seed_everything(recipe.seed)
    dev = device()
    stages = {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-train-throughput-") as tmp:
        data = SplitData(write_split(recipe, Path(tmp)), recipe.data,
                         Preprocessing.for_model(recipe.model.arch, recipe.data), recipe.seed)
        for stage in args.stages:
            stages[stage] = measure_stage(stage, recipe, data, dev, args)
    cpu = autotune.cpu_info()
    cpu_public = {k: cpu[k] for k in ("model_name", "family", "model", "stepping")}
    doc = {
        "schema": "edgepipe.train_throughput/2",
        "cpu_slug": cpu_name(),
        "cpu": cpu_public,
        "settings": {
            "recipe": args.recipe.replace(str(ROOT) + os.sep, ""),
            "arch": recipe.model.arch,
            "image_size": recipe.data.image_size,
            "batch_size": recipe.data.batch_size,
            "rounds": args.rounds,
            "batches_per_round": args.batches_per_round,
            "warmup_batches": args.warmup_batches,
            "threads": args.threads,
            "num_workers": args.num_workers,
            "device": str(dev),
        },
        "stages": stages,
        "verdict": {
            "finetune_speedup_ok": stages.get("finetune", {}).get("ours_vs_plain", 0) >= SPEEDUP_TARGET,
            "never_slower_ok": all(r["ours_vs_plain"] >= NOT_SLOWER for r in stages.values()),
        },
        "environment": environment(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"train_throughput_{doc['cpu_slug']}"
    atomic_write_json(args.out / f"{stem}.json", doc)
    atomic_write_text(args.out / f"{stem}.md", markdown(doc))
    print(markdown(doc))
    return doc


if __name__ == "__main__":
    main()
