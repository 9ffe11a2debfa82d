from __future__ import annotations

import pytest
import torch

from edgepipe.errors import ModelError
from edgepipe.models.checkpoint import CHECKPOINT_KEYS, read_checkpoint, safe_load


class _Opaque:  # an arbitrary class: unpickling it would need code from the file's author
    pass


def test_safe_load_reads_tensors_and_plain_values(tmp_path):
    torch.save({"w": torch.ones(2), "cfg": {"arch": "x", "size": (3, 32, 32)}}, tmp_path / "s.pt")
    state = safe_load(tmp_path / "s.pt")
    assert torch.equal(state["w"], torch.ones(2)) and state["cfg"]["size"] == (3, 32, 32)


def test_safe_load_refuses_a_pickled_object(tmp_path):
    torch.save({"obj": _Opaque()}, tmp_path / "s.pt")
    with pytest.raises(ModelError, match="not a torch checkpoint edgepipe can read safely"):
        safe_load(tmp_path / "s.pt")


def test_read_checkpoint_names_the_missing_keys(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "model.pt")
    with pytest.raises(ModelError, match="missing arch, model_cfg"):
        read_checkpoint(tmp_path / "model.pt")
    torch.save({k: {} for k in CHECKPOINT_KEYS}, tmp_path / "model.pt")
    assert set(read_checkpoint(tmp_path / "model.pt")) == set(CHECKPOINT_KEYS)
