"""Packed (int8) weights: close to the originals, exact where small, refused when malformed."""

from __future__ import annotations

import pytest

from napari_cellseg._torch import torch
from napari_cellseg.model.packing import pack_state_dict, unpack_state_dict


def test_round_trip_within_half_a_step_per_channel():
    torch.manual_seed(0)
    conv = torch.randn(64, 32, 3, 3) * torch.linspace(0.01, 3, 64)[:, None, None, None]
    state = {"conv": conv, "bias": torch.randn(64), "count": torch.tensor(7), "small": torch.randn(4, 4)}
    packed = pack_state_dict(state)
    assert packed["conv"]["q"].dtype == torch.int8
    back = unpack_state_dict(packed)
    step = conv.reshape(64, -1).abs().amax(1) / 127
    error = (back["conv"] - conv).reshape(64, -1).abs().amax(1)
    assert torch.all(error <= step / 2 + 1e-6)  # each channel keeps its own resolution
    assert torch.equal(back["bias"], state["bias"]) and torch.equal(back["small"], state["small"])
    assert back["count"].dtype == torch.int64 and int(back["count"]) == 7


def test_all_zero_channel_stays_zero():
    back = unpack_state_dict(pack_state_dict({"w": torch.zeros(8, 1024)}))
    assert torch.count_nonzero(back["w"]) == 0


@pytest.mark.parametrize("entry", [
    "not a dict",
    {"q": torch.zeros(4, 4, dtype=torch.float32), "scale": torch.ones(4)},
    {"q": torch.zeros(4, 4, dtype=torch.int8), "scale": torch.ones(3)},
    {"q": torch.zeros(4, 4, dtype=torch.int8)},
])
def test_malformed_entries_are_refused(entry):
    with pytest.raises(ValueError, match="'w'"):
        unpack_state_dict({"w": entry})
