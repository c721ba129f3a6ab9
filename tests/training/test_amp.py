from napari_cellseg.training import amp
from napari_cellseg._torch import torch


def test_off_means_fp32_everywhere():
    assert amp.autocast_dtype(torch.device("cuda"), False) == (None, None)
    assert amp.autocast_dtype(torch.device("cpu"), False) == (None, None)


def test_cuda_uses_fp16():
    assert amp.autocast_dtype(torch.device("cuda"), None)[0] is torch.float16


def test_cpu_auto_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: False)
    dtype, note = amp.autocast_dtype(torch.device("cpu"), None)
    assert dtype is None and "fp32" in note
    dtype, note = amp.autocast_dtype(torch.device("cpu"), True)
    assert dtype is torch.bfloat16 and "slower" in note
    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: True)
    assert amp.autocast_dtype(torch.device("cpu"), None) == (torch.bfloat16, None)
