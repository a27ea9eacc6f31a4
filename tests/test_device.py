"""The one device resolver shared by predict, pseudolabel, train and bench."""

from __future__ import annotations

import pytest
import torch

from c2fseg.device import DeviceError, resolve_device


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cpu_and_devices_pass_through():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(DeviceError, match="no usable CUDA GPU.*--device auto.*--device cpu"):
            resolve_device(name)


def test_missing_gpu_index_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="only 1 CUDA"):
        resolve_device("cuda:3")
    for bad in ("gpu", "tpu", "cuda:x", torch.device("meta")):
        with pytest.raises(ValueError, match="device"):
            resolve_device(bad)
