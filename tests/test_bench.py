"""c2fseg bench: end-to-end run on a tiny case, the memory sampler, plans of production size."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import torch

from c2fseg.bench.baseline import agreement, baseline_variants
from c2fseg.bench.cases import box_labels, fixed_box
from c2fseg.bench.monitor import MemorySampler, maxrss_mb
from c2fseg.bench.plans import CONFIGURATION, production_plans, thin_plans
from c2fseg.bench.runner import STAGE_ROWS, BenchOptions, run_bench
from c2fseg.infer.roi import compute_roi
from c2fseg.infer.stage_loader import build_network
from c2fseg.io import make_geometry, write_volume


@pytest.fixture
def tiny_ct(tmp_path):
    """A 16 x 40 x 40 CT with a soft-tissue block in air, written as NIfTI."""
    ct = np.full((16, 40, 40), -1000, dtype=np.int16)
    ct[2:14, 6:34, 6:34] = 40
    path = tmp_path / "tiny_0000.nii.gz"
    write_volume(ct, make_geometry(ct.shape, (2.5, 1.5, 1.5)), path)
    return path


def _run_tiny(tiny_ct, tmp_path, baseline: str) -> tuple[dict, dict]:
    out = tmp_path / "res" / "bench.json"
    opts = BenchOptions(cases=[str(tiny_ct)], models="thin", device="cpu", warm=1, baseline=baseline,
                        precision="fp32", out=out, cache_dir=tmp_path / "cache", patch=(16, 32, 32),
                        width=4, progress=False)
    results = run_bench(opts)
    assert results["output"] == str(out) and out.with_suffix(".md").is_file()
    return results, json.loads(out.read_text())


def test_bench_runs_end_to_end_on_cpu(tiny_ct, tmp_path):
    _, saved = _run_tiny(tiny_ct, tmp_path, "none")
    for key in ("schema", "machine", "options", "device", "warm_runs", "baseline", "notes", "cases"):
        assert key in saved
    assert saved["machine"]["cpu_cores_usable"] == len(os.sched_getaffinity(0))
    assert saved["machine"]["torch"] == torch.__version__ and saved["machine"]["device"] == "cpu"
    case = saved["cases"][0]
    assert case["shape_zyx"] == [16, 40, 40]
    for run in (case["cold"], case["warm"]):
        assert set(run["stages"]) == set(STAGE_ROWS)
        assert all(v >= 0 for v in run["stages"].values())
        # the stage rows partition the run: they never add up to more than the measured total
        assert sum(run["stages"].values()) <= run["total_s"] * 1.01 + 1e-3
    memory = case["cold"]["memory"]
    assert memory["samples"] >= 1 and memory["interval_s"] == 0.1
    # sampled RSS of this process: above the size of the CT read, never above the process peak
    assert 40 * 40 * 16 * 2 / 2**20 < memory["peak_host_rss_mb"] <= case["peak_host_maxrss_mb"] + 1.0
    assert case["cold"]["memory"]["peak_gpu_mb"] is None  # CPU run: no GPU figures
    assert case["cold_end_to_end_s"] >= case["cold"]["total_s"]
    assert set(case["models"]) == {"coarse", "organ", "tumor"}
    assert case["models"]["organ"]["features_per_stage"][0] == 4
    box = fixed_box((16, 40, 40))  # --roi box: the fixed central box, widened by the margin
    roi = case["roi"]
    assert all(0 <= a <= b0 and b1 <= c <= n for a, b0, b1, c, n in
               zip(roi["start_zyx"], box.start, box.stop, roi["stop_zyx"], (16, 40, 40), strict=True))
    assert roi["shape_zyx"] == [c - a for a, c in zip(roi["start_zyx"], roi["stop_zyx"], strict=True)]
    assert case["baseline"] == {"skipped": "--baseline none"}


@pytest.mark.slow
def test_bench_baseline_against_nnunet_predictor(tiny_ct, tmp_path):
    _, saved = _run_tiny(tiny_ct, tmp_path, "nomirror")
    base = saved["cases"][0]["baseline"]
    assert base["crop_shape_zyx"] == saved["cases"][0]["roi"]["shape_zyx"]
    variant = base["variants"][0]
    assert variant["mirror"] is False and variant["use_gaussian"] is True
    assert variant["speedup_vs_c2fseg_organ_stage"] == pytest.approx(
        variant["seconds"] / base["c2fseg_organ_s"], rel=0.02, abs=0.01)
    agree = variant["agreement_with_c2fseg_organ"]
    # random thin networks, different tile weights (see tests/infer/test_parity_nnunet.py):
    # 0.80 of voxels equal when measured; far less means the two ran on different inputs
    assert agree["equal_fraction"] >= 0.6
    assert agree["mean_dice"] == pytest.approx(np.mean(list(agree["dice"].values())), abs=1e-3)


def _counting_reader(values, calls_for_event: int) -> tuple:
    """A reader returning ``values`` one by one; its event is set once it has been called
    ``calls_for_event`` times (so a test waits for samples, not for the clock)."""
    seen: list[float] = []
    enough = threading.Event()
    values = iter(values)

    def read() -> float:
        seen.append(float(next(values)))
        if len(seen) >= calls_for_event:
            enough.set()
        return seen[-1]

    return read, seen, enough


#: Only a guard against a hung sampler thread; no assertion depends on how long sampling takes.
HANG_GUARD_S = 120


def test_memory_sampler_samples_and_area():
    host, host_seen, enough = _counting_reader(range(10, 100_000, 10), calls_for_event=3)
    gpu, gpu_seen, _ = _counting_reader(range(100, 100_000, 10), calls_for_event=1)
    sampler = MemorySampler("cpu", interval=0.02, host_reader=host)
    sampler._gpu = (gpu, "fake")  # a GPU reader with known values
    with sampler:
        assert enough.wait(HANG_GUARD_S), "the sampler thread took no samples"
    s = sampler.summary()
    n = len(host_seen)
    assert n >= 4  # three from the thread, one more when stopping
    assert sampler.host_mb == host_seen == [10.0 * (i + 1) for i in range(n)]
    assert sampler.gpu_mb == gpu_seen == [100.0 + 10 * i for i in range(n)]
    assert s["samples"] == n and s["interval_s"] == 0.02 and s["gpu_source"] == "fake"
    assert s["peak_host_rss_mb"] == 10.0 * n
    assert s["peak_gpu_mb"] == 100.0 + 10 * (n - 1)
    assert s["gpu_area_mb_s"] == round(sum(gpu_seen) * 0.02, 1)


def test_memory_sampler_without_gpu_reports_host_only():
    host, seen, enough = _counting_reader([5.0, 7.5, 6.0, 6.0, 6.0] + [1.0] * 10_000, calls_for_event=2)
    with MemorySampler("cpu", host_reader=host) as sampler:
        assert enough.wait(HANG_GUARD_S), "the sampler thread took no samples"
    assert sampler.interval == 0.1  # the FLARE sampling interval is the default
    s = sampler.summary()
    assert s["samples"] == len(seen) and s["peak_host_rss_mb"] == 7.5
    assert (s["gpu_source"], s["peak_gpu_mb"], s["gpu_area_mb_s"]) == (None, None, None)


def test_memory_sampler_reads_this_process_rss_by_default():
    import psutil

    with MemorySampler("cpu") as sampler:
        pass  # stopping takes one sample even when the work is shorter than the interval
    now_mb = psutil.Process().memory_info().rss / 2**20
    peak = sampler.summary()["peak_host_rss_mb"]
    assert sampler.summary()["samples"] >= 1
    assert 0.5 * now_mb < peak <= maxrss_mb() + 1.0  # MiB of this process, never above its peak


def _conv_params(cin: int, cout: int) -> int:
    return cin * cout * 27 + cout + 2 * cout  # 3x3x3 conv with bias + affine instance norm


def test_production_plans_build_a_network_of_the_right_size():
    plans = production_plans("organ")
    kw = plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]
    assert kw["n_stages"] == 6
    assert kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kw["strides"][0] == [1, 1, 1] and all(max(s) == 2 for s in kw["strides"][1:])
    assert all(k == [3, 3, 3] for k in kw["kernel_sizes"])
    net = build_network(plans, CONFIGURATION, 14)
    feats, expected, cin = kw["features_per_stage"], 0, 1
    for f in feats:  # encoder: two convs per stage
        expected += _conv_params(cin, f) + _conv_params(f, f)
        cin = f
    encoder = sum(p.numel() for p in net.encoder.parameters())
    assert encoder == expected
    total = sum(p.numel() for p in net.parameters())
    assert 25e6 < total < 40e6  # nnU-Net's default FLARE-size network is ~31 M parameters


def test_thin_plans_are_thinner_and_coarser():
    thin, prod = thin_plans("organ"), production_plans("organ")
    t_conf = thin["configurations"][CONFIGURATION]
    assert prod["configurations"][CONFIGURATION]["spacing"] == [2.5, 1.26, 1.26]
    assert t_conf["spacing"] == [2.5, 1.5, 1.5]
    assert t_conf["architecture"]["arch_kwargs"]["features_per_stage"][0] == 16
    t_net, p_net = build_network(thin, CONFIGURATION, 14), build_network(prod, CONFIGURATION, 14)
    assert sum(p.numel() for p in t_net.parameters()) < sum(p.numel() for p in p_net.parameters())


def test_production_plans_use_published_ct_statistics():
    props = production_plans("coarse")["foreground_intensity_properties_per_channel"]["0"]
    assert (props["percentile_00_5"], props["percentile_99_5"]) == (-325.0, 266.0)
    assert props["mean"] == pytest.approx(59.28)


def test_fixed_box_map_gives_back_the_box_through_the_roi_rule():
    shape = (40, 60, 60)
    box = fixed_box(shape)
    assert box.shape == (20, 36, 36)
    roi = compute_roi(box_labels(shape, box), (1.0, 1.0, 1.0), margin_mm=0.0)
    assert roi == box


def test_agreement():
    a = np.zeros((4, 4, 4), np.uint8)
    a[:2] = 1
    b = a.copy()
    assert agreement(a, b) == {"equal_fraction": 1.0, "dice": {"liver": 1.0}, "mean_dice": 1.0}
    b[:2], b[2:] = 0, 1
    res = agreement(a, b)
    assert res["equal_fraction"] == 0.0 and res["dice"]["liver"] == 0.0
    with pytest.raises(ValueError):
        agreement(a, a[:2])


def test_baseline_variants():
    assert baseline_variants("none") == [] and baseline_variants("all") == [False, True]
    with pytest.raises(ValueError):
        baseline_variants("sometimes")


def test_cli_rejects_coarse_roi_with_random_networks(tmp_path, capsys):
    from c2fseg.cli import main

    assert main(["bench", "--models", "thin", "--roi", "coarse", "-o", str(tmp_path / "x.json")]) == 2
    assert "trained weights" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_timed_model_records_calls_and_substitutes_roi():
    from c2fseg.bench.models import TimedModel
    from c2fseg.infer.stage_model import StagePrediction

    class Fake:
        spacing = (1.0, 1.0, 1.0)

        def predict(self, ct, spacing, **kw):
            return StagePrediction(torch.zeros(ct.shape, dtype=torch.uint8), None, {"sliding_window": 0.5})

    wrapped = TimedModel(Fake(), "coarse")
    wrapped.roi_labels = np.ones((2, 3, 4), np.uint8)
    pred = wrapped.predict(torch.zeros(2, 3, 4), (1, 1, 1))
    assert wrapped.spacing == (1.0, 1.0, 1.0) and wrapped.summed("sliding_window") == 0.5
    assert int(pred.labels.sum()) == 24
    with pytest.raises(ValueError):
        wrapped.predict(torch.zeros(1, 1, 1), (1, 1, 1))
