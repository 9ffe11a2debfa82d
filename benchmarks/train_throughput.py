"""Is our training loop as fast as a plain PyTorch loop, and is the data loader keeping up?

Trains one model with edgepipe's ``train_one_epoch`` (called as the finetune stage's ``fit`` calls it: the
recipe's loader, optimiser, lr schedule and loss from ``training_parts``) and with a hand-written loop
(zero_grad, forward, loss, backward, step) over the same model, DataLoader, optimiser, loss and batch size,
in one run, alternating the two in ABBA rounds so that drift (other load, clock changes) hits both alike.
Reports images/s of each, their ratio (target: ours within 10% of plain) and the share of step time each
loop waits for the next batch (target: the loader is not the bottleneck).

    .venv/bin/python benchmarks/train_throughput.py [--arch mobilenet_v3_large] [--image-size 64]
        [--batch-size 64] [--batches 400] [--rounds 8] [--threads 2] [--num-workers 0] [--out DIR]

Default data: the built-in Fashion-MNIST as recipes/mnv3_qat.yaml makes it (its split is written to a
temporary folder). Writes DIR/train_throughput.json and DIR/train_throughput.md (DIR: benchmarks/results).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

from edgepipe.artifacts import atomic_write_json, atomic_write_text
from edgepipe.bench.timing import environment
from edgepipe.recipe import Recipe, load_recipe

log = logging.getLogger("train_throughput")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def build_recipe(args: argparse.Namespace) -> Recipe:
    """The base recipe with the benchmark's arch, size, batch size and workers."""
    base = load_recipe(args.recipe)
    raw = base.model_dump(mode="json", exclude_unset=True)
    raw["data"] = {
        **raw["data"],
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
    }
    raw["model"] = {**raw.get("model", {}), "arch": args.arch, "pretrained": "none"}
    if args.arch not in ("mobilenet_v3_large", "mobilenet_v3_small"):
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


def plain_epoch(model, loader, criterion, optimizer, device, batches: int) -> dict[str, float]:
    """The hand-written baseline: nothing but the training step (and the wait clock: two perf_counters)."""
    model.train()
    wait, t = 0.0, time.perf_counter()
    for images, labels in islice(loader, batches):
        wait += time.perf_counter() - t
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        t = time.perf_counter()
    return {"data_wait_s": wait}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from edgepipe.data.loaders import SplitData
    from edgepipe.models.build import build_model
    from edgepipe.models.preprocessing import Preprocessing
    from edgepipe.stages.base import seed_everything
    from edgepipe.train.loop import train_one_epoch
    from edgepipe.train.precision import amp_dtype, channels_last
    from edgepipe.train.trainer import device, training_parts

    torch.set_num_threads(args.threads)
    recipe = build_recipe(args)
    cfg = recipe.finetune
    seed_everything(recipe.seed)
    with tempfile.TemporaryDirectory(prefix="edgepipe-train-throughput-") as tmp:
        split_path = write_split(recipe, Path(tmp))
        pre = Preprocessing.for_model(recipe.model.arch, recipe.data)
        data = SplitData(split_path, recipe.data, pre, recipe.seed)
        model, _ = build_model(recipe.model, len(data.classes))
        dev = device()
        model.to(dev)
        loader, optimizer, scheduler, criterion = training_parts(model, data, recipe, cfg, dev)
        dtype, nhwc = amp_dtype(cfg.amp, dev), channels_last(cfg.channels_last, dev)
        if nhwc:
            model.to(memory_format=torch.channels_last)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        if dtype is not None or nhwc:
            log.warning("on %s the recipe trains with amp=%s channels_last=%s; the plain loop does not",
                        dev, dtype, nhwc)
        per_round = max(1, args.batches // args.rounds)

        def ours(n: int) -> dict[str, float]:
            return train_one_epoch(model, loader, criterion, optimizer, scheduler, dev, scaler, n,
                                   description="ours", grad_clip_norm=cfg.grad_clip_norm, amp_dtype=dtype,
                                   channels_last=nhwc)

        def plain(n: int) -> dict[str, float]:
            return plain_epoch(model, loader, criterion, optimizer, dev, n)

        loops = {"ours": ours, "plain": plain}
        for fn in loops.values():  # warm-up: allocator, oneDNN primitive caches, first batches
            fn(args.warmup_batches)
        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            order = ("ours", "plain") if i % 2 == 0 else ("plain", "ours")  # ABBA
            for name in order:
                t0 = time.perf_counter()
                out = loops[name](per_round)
                seconds = time.perf_counter() - t0
                rounds.append({"round": i, "loop": name, "batches": per_round, "seconds": seconds,
                               "data_wait_s": out["data_wait_s"]})
                log.info("round %d %-5s %.1f images/s, data wait %.0f%%", i, name,
                         per_round * args.batch_size / seconds, 100 * out["data_wait_s"] / seconds)
        meta = {"classes": len(data.classes), "train_images": len(data.split["train"]), "device": str(dev),
                "amp_dtype": str(dtype), "channels_last": nhwc}
    return {"rounds": rounds, "meta": meta, "recipe": recipe}


def summarise(rounds: list[dict[str, Any]], batch_size: int) -> dict[str, dict[str, float]]:
    out = {}
    for name in ("ours", "plain"):
        rs = [r for r in rounds if r["loop"] == name]
        seconds = sum(r["seconds"] for r in rs)
        images = sum(r["batches"] for r in rs) * batch_size
        per_round = sorted(r["batches"] * batch_size / r["seconds"] for r in rs)
        out[name] = {
            "images_per_s": images / seconds,
            "images_per_s_min": per_round[0],
            "images_per_s_max": per_round[-1],
            "step_ms": 1e3 * seconds / sum(r["batches"] for r in rs),
            "data_wait_fraction": sum(r["data_wait_s"] for r in rs) / seconds,
        }
    return out


def markdown(doc: dict[str, Any]) -> str:
    s, env, cfg = doc["summary"], doc["environment"], doc["settings"]
    lines = [
        "# Training throughput: edgepipe's loop vs a plain PyTorch loop",
        "",
        f"{cfg['arch']} at {cfg['image_size']} px, batch {cfg['batch_size']}, {cfg['batches']} timed batches "
        f"per loop in {cfg['rounds']} alternating rounds, {cfg['threads']} threads, "
        f"{cfg['num_workers']} loader workers, data from {cfg['recipe']} on {doc['meta']['device']}.",
        "",
        "| loop | images/s | min-max over rounds | ms/step | data-loader wait (share of step time) |",
        "|---|---|---|---|---|",
    ]
    for name in ("ours", "plain"):
        r = s[name]
        lines.append(
            f"| {name} | {r['images_per_s']:.1f} | {r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f} "
            f"| {r['step_ms']:.1f} | {100 * r['data_wait_fraction']:.1f}% |"
        )
    v = doc["verdict"]
    lines += [
        "",
        f"- ours / plain: **{v['ratio']:.3f}** (target >= {v['ratio_target']}: "
        f"{'met' if v['ratio_ok'] else 'NOT met'})",
        f"- data-loader wait in our loop: **{100 * v['data_wait_fraction']:.1f}%** of step time (target < "
        f"{100 * v['data_wait_target']:.0f}%: {'met' if v['data_wait_ok'] else 'NOT met: loader-bound'})",
        f"- CPU: {env['cpu_model']} ({env['logical_cores']} logical cores; torch threads {cfg['threads']}); "
        f"torch {env['packages']['torch']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "mnv3_qat.yaml"), help="data/optimiser source")
    p.add_argument("--arch", default="mobilenet_v3_large")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=400, help="timed batches per loop, over all rounds")
    p.add_argument("--rounds", type=int, default=8, help="alternations (ABBA); even numbers balance")
    p.add_argument("--warmup-batches", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (the recipes' default: 0)")
    p.add_argument("--ratio-target", type=float, default=0.9)
    p.add_argument("--wait-target", type=float, default=0.1, help="max data-loader wait share of step time")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("EDGEPIPE_PROGRESS", "0")  # no bars redrawn inside timed loops
    res = measure(args)
    summary = summarise(res["rounds"], args.batch_size)
    ratio = summary["ours"]["images_per_s"] / summary["plain"]["images_per_s"]
    wait = summary["ours"]["data_wait_fraction"]
    doc = {
        "schema": "edgepipe.train_throughput/1",
        "settings": {
            "recipe": args.recipe.replace(str(ROOT) + os.sep, ""),
            "arch": args.arch,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "batches": (args.batches // args.rounds) * args.rounds,
            "rounds": args.rounds,
            "warmup_batches": args.warmup_batches,
            "threads": args.threads,
            "num_workers": args.num_workers,
            "optimizer": res["recipe"].finetune.optimizer,
            "scheduler": res["recipe"].finetune.scheduler,
            "loss": res["recipe"].finetune.loss,
        },
        "meta": res["meta"],
        "summary": summary,
        "verdict": {
            "ratio": ratio,
            "ratio_target": args.ratio_target,
            "ratio_ok": ratio >= args.ratio_target,
            "data_wait_fraction": wait,
            "data_wait_target": args.wait_target,
            "data_wait_ok": wait < args.wait_target,
        },
        "rounds": res["rounds"],
        "environment": environment(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "train_throughput.json", doc)
    atomic_write_text(args.out / "train_throughput.md", markdown(doc))
    print(markdown(doc))
    return doc


if __name__ == "__main__":
    main()
