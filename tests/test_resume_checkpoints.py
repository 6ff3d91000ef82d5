"""One guarded loader for every trained stage's checkpoint: missing, truncated, bit-flipped or foreign
files are one-line errors naming the path."""
from functools import partial
from pathlib import Path

import pytest
import torch

from pipeline.errors import WsssError
from stages.checkpoints import load_checkpoint, load_method
from stages.walk import load_network

load_affinity_net = partial(load_network, "affinitynet")
load_boundary_net = partial(load_network, "irn")
from stages.segmentation_models import load_model


def _write_truncated(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"spec": {}, "state_dict": {"w": torch.randn(64, 64)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("loader", [load_method, load_affinity_net, load_boundary_net, load_model])
def test_truncated_checkpoint_is_one_line_error_naming_the_path(tmp_path, loader):
    path = _write_truncated(tmp_path / "cam" / "model.pt")
    with pytest.raises(WsssError) as info:
        loader(path, torch.device("cpu"))
    message = str(info.value)
    assert message.startswith(f"{path}: unreadable checkpoint")
    assert "\n" not in message


@pytest.mark.parametrize("loader, hint", [(load_method, "train-cls --method cam"),
                                          (load_affinity_net, "train-prop affinitynet --method cam"),
                                          (load_boundary_net, "train-prop irn --method cam"),
                                          (load_model, "train-seg")])
def test_missing_checkpoint_names_the_stage_to_run(tmp_path, loader, hint):
    with pytest.raises(WsssError, match=f"checkpoint not found; run `wsss-pipe {hint}"):
        loader(tmp_path / "cam" / "model.pt", torch.device("cpu"))


def test_foreign_and_empty_files_are_rejected(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(WsssError, match=r"foreign\.pt: not a checkpoint of this stage \(missing spec, state_dict\)"):
        load_checkpoint(foreign, "retrain", ("spec", "state_dict"))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(WsssError, match=r"empty\.pt: unreadable checkpoint"):
        load_checkpoint(empty, "retrain")
    flipped = tmp_path / "flipped.pt"
    torch.save({"state_dict": {"w": torch.zeros(8)}}, flipped)
    data = bytearray(flipped.read_bytes())
    for i in range(0, 64):
        data[i] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(WsssError, match=r"flipped\.pt: unreadable checkpoint"):
        load_checkpoint(flipped, "retrain")
