"""Every registry arch through every stage it serves (ptq and bench included), or refused before any stage
runs: the README's promise, at toy sizes (32 px, a few images, one batch per epoch, ONNX Runtime only)."""

import json

import pytest

from edgepipe.errors import RecipeError
from edgepipe.models.registry import FLOAT_ONLY_STAGES, available, get_spec
from edgepipe.pipeline import build, plan
from edgepipe.recipe import parse_recipe
from tests.conftest import make_imagefolder, tiny_recipe

pytestmark = pytest.mark.slow
ALL_STAGES = ["finetune", "qat", "export", "ptq", "bench"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for torch (and the recipe's runtimes): these toy graphs gain nothing from two, and
    on a shared, loaded CPU two threads wait on each other at every op (measured: 250x slower per step)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("archs") / "photos", classes=3, per_class=6, size=32)


def _recipe(arch: str, photos, stages: list[str]) -> dict:
    spec = get_spec(arch)
    # Lite0 from its ImageNet weights, as users run it (the bench stage once failed on exactly this); from
    # random init its ReLU6 head is dead after one step, so the pooled range is empty and ORT refuses it.
    pretrained = "imagenet" if spec.load_weights is not None else "none"
    return tiny_recipe(
        photos,
        name=arch,
        stages=stages,
        data={"batch_size": 8},
        model={"arch": arch, "pretrained": pretrained, "width_mult": 0.25 if spec.supports_width else 1.0,
               "bn_momentum": None},
        finetune={"epochs": 1, "max_batches_per_epoch": 1},
        qat={"max_batches_per_epoch": 1, "calibration_batches": 1, "freeze_observer_epoch": 0},
        # random init, one batch of training: agreement is recorded here, not gated (other tests gate it)
        export={"min_agreement": 0.0, "openvino": False},
        ptq={"calibration_images": 4},
        bench={"threads": 1, "warmup": 1, "min_iters": 2, "min_seconds": 0.0, "runtimes": ["onnxruntime"]},
    )


@pytest.mark.parametrize("arch", available())
def test_arch_runs_every_stage_it_serves_or_is_refused_before_any_runs(arch, photos, tmp_path):
    if get_spec(arch).build_quantizable is None:
        with pytest.raises(RecipeError) as exc:
            plan(parse_recipe(_recipe(arch, photos, ALL_STAGES)))
        msg = str(exc.value)
        assert arch in msg and "fix:" in msg and "\n" not in msg
        stages = list(FLOAT_ONLY_STAGES)
    else:
        stages = ALL_STAGES
    status = build(parse_recipe(_recipe(arch, photos, stages)), tmp_path)
    assert [n for n, s in status.items() if not s["cached"]] == ["split", *stages]
    if "bench" not in stages:
        return
    rows = json.loads((tmp_path / arch / "bench" / "rows.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"fp32", "int8-qat", "int8-ptq"}
    gmacs = {r["model"]: r["gmacs"] for r in rows}
    # counted from each graph (QAT's folded pads, PTQ's QDQ, FP32's exporter chains): twins count the same
    assert gmacs["fp32"] > 0 and gmacs["int8-qat"] == gmacs["int8-ptq"] == gmacs["fp32"], gmacs
