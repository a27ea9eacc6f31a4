"""The CUDA-vs-CPU check's fp32 runs without TF32 (flags restored); NVML probed after the context."""

from __future__ import annotations

import pytest
import torch

from c2fseg.bench import check, monitor
from c2fseg.infer.stage_model import StageModel


@pytest.fixture
def tf32_on():
    """Both TF32 switches on (torch's cuDNN default), put back as found afterwards."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_strict_fp32_switches_tf32_off_and_restores(tf32_on):
    with check.strict_fp32():
        assert check.tf32_flags() == {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False}
    assert check.tf32_flags() == {"cudnn.allow_tf32": True, "cuda.matmul.allow_tf32": True}
    with pytest.raises(RuntimeError), check.strict_fp32():
        raise RuntimeError("a failing reference run")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_check_runs_fp32_without_tf32_and_restores(tf32_on, monkeypatch):
    seen = []
    real_predict = StageModel.predict

    def predict(self, *args, **kwargs):
        seen.append((str(self.device), self.precision, torch.backends.cudnn.allow_tf32,
                     torch.backends.cuda.matmul.allow_tf32))
        return real_predict(self, *args, **kwargs)

    monkeypatch.setattr(StageModel, "predict", predict)
    result = check.device_agreement("cpu", width=2, patch=(16, 32, 32))
    assert [s[:2] for s in seen] == [("cpu", "fp32"), ("cpu", "fp32")]  # reference, then device
    assert all(s[2:] == (False, False) for s in seen)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert result["tf32_flags_outside_fp32_runs"] == {"cudnn.allow_tf32": True,
                                                     "cuda.matmul.allow_tf32": True}
    assert result["required"] == ["fp32"] and result["fp32"]["equal_fraction"] == 1.0
    assert result["ok"] is True


def test_required_agreement_is_99_5_percent_of_fp32_and_fp16_on_cuda():
    assert check.MIN_AGREEMENT == 0.995
    assert check.precisions_for("cuda") == ("fp32", "fp16")
    assert check.precisions_for("cuda:1") == ("fp32", "fp16")
    assert check.precisions_for("cpu") == ("fp32",)


def test_gpu_reader_makes_the_context_before_probing_nvml():
    order = []

    def make_context(dev):
        order.append(("context", str(dev)))

    def probe(index):
        order.append(("probe", index))
        return (lambda: 123.0), "nvml-process"

    reader, source = monitor.gpu_reader("cuda:0", make_context=make_context, probe=probe)
    assert order == [("context", "cuda:0"), ("probe", 0)]
    assert source == "nvml-process" and reader() == 123.0


def test_gpu_reader_makes_no_context_off_cuda():
    def fail(*args):
        raise AssertionError("no context or probe on CPU")

    assert monitor.gpu_reader("cpu", make_context=fail, probe=fail) is None


def test_cuda_context_reports_its_own_memory(monkeypatch):
    """Context memory = NVML used after - before - torch's reservation; measured once."""
    used = iter([1000.0, 1530.0])
    monkeypatch.setattr(monitor, "_CONTEXT", None)
    monkeypatch.setattr(monitor, "_nvml_used_mb", lambda index: next(used))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 2 * monitor.MB)
    made = []
    monkeypatch.setattr(torch, "empty", lambda *a, **k: made.append(k["device"]))
    info = monitor.ensure_cuda_context("cuda:0")
    assert made == [torch.device("cuda", 0)]
    assert info["created_here"] is True and info["context_mb"] == 528.0
    assert monitor.ensure_cuda_context("cuda:0") is info and len(made) == 1
    assert monitor.cuda_context_info() is info


def test_bench_makes_the_cuda_context_before_anything_else_touches_cuda(monkeypatch):
    from c2fseg.bench import runner

    order = []

    class Stop(Exception):
        pass

    def machine_info(device):
        order.append("machine_info")
        raise Stop

    monkeypatch.setattr(runner, "resolve_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(runner, "ensure_cuda_context", lambda dev: order.append(("context", str(dev))))
    monkeypatch.setattr(runner, "machine_info", machine_info)
    monkeypatch.setattr(runner, "resolve_cases", lambda specs, cache: ([], []))
    with pytest.raises(Stop):
        runner.run_bench(runner.BenchOptions(cases=[], device="cuda", progress=False))
    assert order == [("context", "cuda:0"), "machine_info"]
