"""StageModel: building/loading, the full predict pipeline, transposes, precision, fallbacks."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fake_models import (
    BandNet,
    band_stage_model,
    tiny_dataset_json,
    tiny_plans,
    tiny_stage_model,
    write_fake_weights,
)

import c2fseg.infer.precision as precision_policy
import c2fseg.infer.stage_model as sm
from c2fseg.infer import stage_loader
from c2fseg.infer.resample import grid_shape
from c2fseg.infer.sliding import sliding_window
from c2fseg.infer.stage_loader import extract_state_dict
from c2fseg.infer.stage_model import NonFiniteOutputError, StageModel
from c2fseg.settings import resolve_inference
from c2fseg.weights import WeightsError
from real_data import CT, real_path

SPACING = (2.0, 1.5, 1.5)  # the tiny plans' spacing: no resampling


def smooth_ct(shape=(16, 32, 40), seed=0, scale=3000.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool3d(torch.randn(1, 1, *shape, generator=g), 7, 1, 3)[0, 0] * scale


def direct_logits(model: StageModel, ct: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return sliding_window(model.network, model.normalizer(ct), model.patch_size, model.num_classes,
                              step=model.step)


def test_load_rebuilds_the_saved_network(tmp_path):
    folder = write_fake_weights(tmp_path, "organ", seed=3)
    loaded = StageModel.load(folder, "cpu", precision="fp32")
    built = tiny_stage_model("organ", seed=3)
    assert loaded.stage == "organ" and loaded.channel_labels == tuple(range(14))
    assert loaded.spacing == SPACING and loaded.patch_size == (16, 32, 32)
    assert loaded.manifest["stage_dir"] == str(folder.resolve())
    ref = built.network.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.network.state_dict().items())
    assert not loaded.network.training and not getattr(loaded.network, "deep_supervision", False)
    ct = smooth_ct()
    assert torch.equal(loaded.predict(ct, SPACING).labels, built.predict(ct, SPACING).labels)


def test_manifest_without_input_orientation_is_refused(tmp_path):
    import json

    folder = write_fake_weights(tmp_path, "organ")
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["input_orientation"] == "canonical-LPS"
    del manifest["input_orientation"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="manifest.json.*input_orientation.*canonical-LPS.*c2fseg train organ"):
        StageModel.load(folder, "cpu")
    manifest["input_orientation"] = "RAS"
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="'RAS' is not supported"):
        StageModel.load(folder, "cpu")


def test_load_takes_inference_defaults_from_manifest(tmp_path):
    folder = write_fake_weights(tmp_path, "coarse", inference={"min_prob": 0.1, "weighting": "gaussian"})
    model = StageModel.load(folder, "cpu")
    assert (model.step, model.min_prob, model.weighting) == (1.0, 0.1, "gaussian")
    assert StageModel.load(folder, "cpu", step=0.5).step == 0.5


def test_load_runs_with_every_inference_setting_of_the_manifest(tmp_path):
    folder = write_fake_weights(tmp_path, "organ", inference={"step": 0.25, "mirror": True,
                                                            "keep_largest": [1, 3]})
    model = StageModel.load(folder, "cpu", precision="fp32", weighting="gaussian")
    assert (model.step, model.mirror, model.weighting) == (0.25, True, "gaussian")
    assert model.inference["keep_largest"] == [1, 3]
    used = model.settings_used()
    assert used["source"] == str(folder.resolve()) and used["inference"] == model.inference
    assert used["spacing"] == list(SPACING) and used["normalization"]["clip"] == [-1000.0, 1000.0]
    with pytest.raises(ValueError, match="step must be in"):
        StageModel.load(folder, "cpu", step=1.5)


def test_manifest_values_that_disagree_with_the_plans_are_refused(tmp_path):
    import json

    folder = write_fake_weights(tmp_path, "organ")
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["spacing"] = [9.0, 9.0, 9.0]
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"manifest spacing \[9.0, 9.0, 9.0\] disagrees with plans"):
        StageModel.load(folder, "cpu")


def test_a_new_loader_only_has_to_return_a_loaded_stage():
    """What a checkpoint importer adds: a LoadedStage from any network; prediction is unchanged."""
    band = band_stage_model("coarse", {1: 150.0})
    loaded = stage_loader.LoadedStage(BandNet(band.network.centres.tolist()), band.spec,
                                      resolve_inference("coarse", {"step": 0.5}),
                                      source="imported:test")
    model = StageModel.from_loaded(loaded, "cpu", precision="fp32")
    ct = smooth_ct()
    assert torch.equal(model.predict(ct, SPACING).labels, band.predict(ct, SPACING).labels)
    assert model.source == "imported:test" and model.step == 0.5
    assert StageModel.from_loaded(loaded, "cpu", min_prob=0.2).min_prob == 0.2


def test_prefixed_state_dicts_load():
    model = tiny_stage_model("coarse", seed=2)
    state = {f"_orig_mod.module.{k}": v for k, v in model.network.state_dict().items()}
    assert set(extract_state_dict({"network_weights": state})) == set(model.network.state_dict())
    other = StageModel.from_plans(tiny_plans(), tiny_dataset_json("coarse"), "3d_tiny", "coarse",
                                  state_dict={"network_weights": state}, device="cpu", precision="fp32")
    ct = smooth_ct()
    assert torch.equal(other.predict(ct, SPACING).labels, model.predict(ct, SPACING).labels)


def test_checkpoint_that_does_not_fit_the_plans_is_rejected():
    state = tiny_stage_model("coarse").network.state_dict()
    with pytest.raises(WeightsError, match="does not fit"):
        StageModel.from_plans(tiny_plans(features=(4, 8, 32)), tiny_dataset_json("coarse"), "3d_tiny",
                              "coarse", state_dict=state, device="cpu")


def test_predict_equals_argmax_of_network_on_model_grid():
    model = tiny_stage_model("tumor", seed=4)
    ct = smooth_ct((16, 32, 32))
    pred = model.predict(ct.numpy(), SPACING, prob_label=14)
    logits = direct_logits(model, ct)
    lut = torch.tensor(model.channel_labels, dtype=torch.uint8)
    assert pred.labels.shape == ct.shape and pred.labels.dtype == torch.uint8
    assert torch.equal(pred.labels, lut[logits.argmax(0)])
    assert torch.allclose(pred.prob.float(), torch.softmax(logits, 0)[14], atol=1e-3)
    assert set(pred.timings) >= {"resample_in", "sliding_window", "resample_out", "total"}
    assert not pred.labels.is_inference() and not pred.prob.is_inference()
    pred.labels[0, 0, 0] = 0  # callers (merge, post-processing) may edit results in place


def test_other_spacing_is_resampled_and_returned_on_input_grid():
    model = band_stage_model("coarse", {1: 150.0, 3: 450.0})
    ct = np.full((30, 50, 44), -1000.0, dtype=np.float32)
    ct[10:22, 10:30, 5:20] = 150.0  # "liver"
    ct[12:20, 15:35, 28:40] = 450.0  # "spleen"
    pred = model.predict(ct, (1.2, 0.9, 1.1))
    assert pred.info["model_grid_shape"] == list(grid_shape(ct.shape, (1.2, 0.9, 1.1), model.spacing))
    assert pred.labels.shape == ct.shape
    truth = np.select([ct == 150.0, ct == 450.0], [1, 3], 0)
    inner = np.zeros_like(truth, dtype=bool)  # away from edges, where interpolation mixes values
    inner[12:20, 12:28, 7:18] = inner[14:18, 17:33, 30:38] = True
    inner[:5] = True
    labels = pred.labels.numpy()
    assert np.array_equal(labels[inner], truth[inner])
    assert (labels == truth).mean() > 0.95


class Spy(torch.nn.Module):
    """Wraps a network and keeps the last input it saw."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.net(x)


def test_transpose_forward_is_applied_around_the_network_only():
    fwd = (2, 0, 1)
    plans = tiny_plans(spacing=(1.5, 2.0, 1.0), patch_size=(32, 16, 40), transpose_forward=fwd)
    model = StageModel.from_plans(plans, tiny_dataset_json("coarse"), "3d_tiny", "coarse",
                                  device="cpu", precision="fp32")
    # plans are in model order: model axis i is canonical axis fwd[i]
    assert model.spacing == (2.0, 1.0, 1.5) and model.patch_size == (16, 40, 32)
    band = band_stage_model("coarse", {1: 150.0, 2: 300.0})
    spy = Spy(band.network)
    model.network, model.normalizer = spy, band.normalizer
    ct = torch.full((12, 30, 20), -1000.0)
    ct[2:9, 4:20, 3:8] = 150.0
    ct[5:11, 22:28, 10:18] = 300.0
    pred = model.predict(ct, model.spacing)  # no resampling
    assert spy.seen[0].shape[2:] == model.patch_size_model == (32, 16, 40)
    padded_in = spy.seen[0][0, 0]
    content = band.normalizer(ct).permute(*fwd)  # model-order volume (20, 12, 30)
    assert torch.equal(padded_in[6:26, 2:14, 5:35], content)
    expected = torch.where(ct == 150.0, 1, torch.where(ct == 300.0, 2, 0)).to(torch.uint8)
    assert torch.equal(pred.labels, expected)


def test_cpu_predictions_are_bit_identical(tmp_path):
    folder = write_fake_weights(tmp_path, "organ", seed=5)
    ct = smooth_ct((16, 30, 24), seed=1)
    a = StageModel.load(folder, "cpu").predict(ct, (2.5, 1.2, 1.7), prob_label=1)
    b = StageModel.load(folder, "cpu").predict(ct, (2.5, 1.2, 1.7), prob_label=1)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.prob, b.prob)


def test_chunk_size_does_not_change_labels():
    model = tiny_stage_model("coarse", seed=6)
    ct = smooth_ct((18, 30, 34), seed=2)
    ref = model.predict(ct, (1.3, 1.9, 1.1), prob_label=5)
    for chunk in (1, 4):
        out = model.predict(ct, (1.3, 1.9, 1.1), prob_label=5, chunk_z=chunk)
        assert torch.equal(out.labels, ref.labels) and torch.equal(out.prob, ref.prob)


def _agreement(model_a: StageModel, model_b: StageModel, seed: int) -> tuple[float, float]:
    """Label agreement overall and on voxels whose fp32 top-2 logit margin exceeds 0.05."""
    ct = smooth_ct((16, 32, 32), seed=seed)
    a = model_a.predict(ct, SPACING).labels.cpu()
    b = model_b.predict(ct, SPACING).labels.cpu()
    top2 = direct_logits(model_a if model_a.device.type == "cpu" else model_b, ct).topk(2, 0).values
    sure = (top2[0] - top2[1]) > 0.05
    same = a == b
    return same.float().mean().item(), same[sure].float().mean().item()


# Tolerance: a random network has many near-ties (20-40 % of voxels have a top-2 logit margin
# below 0.05), and bf16/fp16 perturb logits by ~1e-2, so overall agreement is ~99 % (>= 98 %
# required) while voxels with a clear margin must agree (>= 99.9 %).
@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_and_fp32_labels_agree(seed):
    overall, sure = _agreement(tiny_stage_model("organ", seed=seed, precision="fp32"),
                               tiny_stage_model("organ", seed=seed, precision="bf16"), seed)
    assert overall > 0.98 and sure > 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_and_cpu_labels_agree():
    cpu = tiny_stage_model("organ", seed=0, precision="fp32")
    gpu = tiny_stage_model("organ", seed=0, device="cuda", precision="auto")
    assert gpu.precision == "fp16"
    overall, sure = _agreement(cpu, gpu, 0)
    assert overall > 0.98 and sure > 0.999


def test_precision_resolution(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_policy, "cpu_has_fast_bf16", lambda: True)
    assert precision_policy.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision_policy, "cpu_has_fast_bf16", lambda: False)
    assert precision_policy.resolve_precision("auto", cpu) == "fp32"
    assert precision_policy.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert precision_policy.resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        precision_policy.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision"):
        precision_policy.resolve_precision("int8", cpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no usable CUDA"):
        tiny_stage_model("coarse", device="cuda")


class NaNUnderAutocast(torch.nn.Module):
    """Returns NaN logits whenever autocast is on (or always), else the wrapped output."""

    def __init__(self, net, always=False):
        super().__init__()
        self.net, self.always = net, always

    def forward(self, x):
        out = self.net(x)
        if self.always or torch.is_autocast_enabled(x.device.type):
            out = out * float("nan")
        return out


def test_non_finite_low_precision_output_is_retried_in_fp32():
    model = band_stage_model("coarse", {1: 150.0}, precision="bf16")
    ref = band_stage_model("coarse", {1: 150.0}).predict(smooth_ct(), SPACING).labels
    model.network = NaNUnderAutocast(model.network)
    pred = model.predict(smooth_ct(), SPACING)
    assert pred.info["precision"] == "fp32"
    assert torch.equal(pred.labels, ref)


def test_non_finite_fp32_output_raises():
    model = band_stage_model("coarse", {1: 150.0}, precision="bf16")
    model.network = NaNUnderAutocast(model.network, always=True)
    with pytest.raises(NonFiniteOutputError):
        model.predict(smooth_ct(), SPACING)


def _raise_oom_first(monkeypatch, times: int):
    real = sm.sliding_window
    calls = {"n": 0, "batch": [], "acc_device": []}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        calls["batch"].append(kwargs["batch_size"])
        calls["acc_device"].append(kwargs.get("acc_device"))
        if calls["n"] <= times:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(sm, "sliding_window", flaky)
    return calls


@pytest.mark.parametrize("failures", [1, 2])
def test_out_of_memory_falls_back_and_gives_same_labels(monkeypatch, failures):
    model = tiny_stage_model("coarse", seed=7, tile_batch=3)
    ct = smooth_ct((16, 40, 40))
    ref = model.predict(ct, SPACING).labels
    calls = _raise_oom_first(monkeypatch, failures)
    pred = model.predict(ct, SPACING)
    assert len(pred.info["fallbacks"]) == failures and calls["batch"][0] == 3 and calls["batch"][-1] == 1
    assert calls["acc_device"][0] is None
    assert pred.info["device"] == "cpu" and pred.labels.device == model.device
    assert torch.equal(pred.labels, ref)


def test_gpu_retry_moves_the_logits_to_host_memory_and_cpu_retry_is_fp32():
    model = tiny_stage_model("coarse", precision="fp32")
    model.device = torch.device("cuda")  # only the plan of attempts is looked at, nothing runs
    model.precision = "fp16"
    attempts = model._attempts()
    assert [(d.type, acc and acc.type) for d, _, _, acc in attempts] == [
        ("cuda", None), ("cuda", "cpu"), ("cpu", None)]
    assert model._precision_on(torch.device("cuda")) == "fp16"
    assert model._precision_on(torch.device("cpu")) == "fp32"


def test_logits_are_accumulated_on_the_requested_device():
    model = tiny_stage_model("organ", seed=5)
    ct = model.normalizer(smooth_ct((16, 40, 40)))
    with torch.inference_mode():
        here = sliding_window(model.network, ct, model.patch_size, model.num_classes, step=0.5)
        host = sliding_window(model.network, ct, model.patch_size, model.num_classes, step=0.5,
                              acc_device="cpu")
        there = sliding_window(model.network, ct, model.patch_size, model.num_classes, step=0.5,
                               acc_device=torch.device("meta"))  # a device with no data: placement only
    assert torch.equal(host, here)
    assert there.device.type == "meta" and there.shape == here.shape


def test_cpu_fallback_network_is_built_from_host_copies(monkeypatch):
    model = tiny_stage_model("organ", seed=6)
    originals = {id(t) for t in [*model.network.parameters(), *model.network.buffers()]}
    cloned = []
    real = torch.Tensor.__deepcopy__

    def spy(self, memo):
        cloned.append(id(self))
        return real(self, memo)

    monkeypatch.setattr(torch.Tensor, "__deepcopy__", spy)
    copy = sm.cpu_copy(model.network)
    assert not originals & set(cloned)  # no weight was cloned on the network's own device
    ref = model.network.state_dict()
    for key, value in copy.state_dict().items():
        assert value.device.type == "cpu" and torch.equal(value, ref[key])
        assert value.data_ptr() != ref[key].data_ptr()
    assert not copy.training


class FailingFirst(torch.nn.Module):
    """Raises ``error`` on its first ``failures`` calls, holding a tensor in that frame.

    ``held`` keeps a weak reference to the tensor of every failed call; ``alive_at_retry``
    records, at each later call, whether those tensors still existed (they do while anything
    still refers to the failed call's traceback, e.g. a retry inside the ``except`` block).
    """

    def __init__(self, net, error: Exception, failures: int = 1):
        super().__init__()
        self.net, self.error, self.failures = net, error, failures
        self.calls, self.held, self.alive_at_retry = 0, [], []

    def forward(self, x):
        self.calls += 1
        if self.calls <= self.failures:
            workspace = torch.empty(1024)  # what a failed attempt leaves on the device
            self.held.append(weakref.ref(workspace))
            raise type(self.error)(*self.error.args)  # a new exception each time, like torch
        self.alive_at_retry.append([ref() is not None for ref in self.held])
        return self.net(x)


@pytest.mark.parametrize("message", [
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "CUDA error: out of memory",
])
def test_allocation_failures_reported_as_runtime_errors_fall_back(message):
    model = tiny_stage_model("coarse", seed=7)
    ct = smooth_ct((16, 32, 32))
    ref = model.predict(ct, SPACING).labels
    model.network = FailingFirst(model.network, RuntimeError(message))
    pred = model.predict(ct, SPACING)
    assert len(pred.info["fallbacks"]) == 1 and message.split(":")[0] in pred.info["fallbacks"][0]
    assert torch.equal(pred.labels, ref)


def test_retry_starts_after_the_failed_attempt_is_released():
    model = tiny_stage_model("coarse", seed=7)
    ct = smooth_ct((16, 32, 32))
    net = FailingFirst(model.network, torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"),
                       failures=2)
    model.network = net
    pred = model.predict(ct, SPACING)
    assert len(pred.info["fallbacks"]) == 2 and len(net.held) == 2
    assert net.alive_at_retry == [[False, False]]  # nothing of either failed attempt was kept


def test_other_runtime_errors_are_not_retried():
    model = tiny_stage_model("coarse")
    model.network = FailingFirst(model.network, RuntimeError("Given groups=1, weight of size [4]"))
    with pytest.raises(RuntimeError, match="groups=1"):
        model.predict(smooth_ct((16, 32, 32)), SPACING)
    assert model.network.calls == 1
    assert sm.is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert not sm.is_out_of_memory(NonFiniteOutputError("out of memory"))
    assert not sm.is_out_of_memory(ValueError("out of memory"))


def test_out_of_memory_everywhere_is_raised(monkeypatch):
    model = tiny_stage_model("coarse")
    _raise_oom_first(monkeypatch, 99)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        model.predict(smooth_ct((16, 32, 32)), SPACING)


def test_bad_inputs_are_refused():
    model = band_stage_model("coarse")
    with pytest.raises(ValueError, match="3D"):
        model.predict(np.zeros((4, 4), np.float32), SPACING)
    with pytest.raises(ValueError, match="spacing"):
        model.predict(np.zeros((4, 4, 4), np.float32), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="not predicted"):
        model.predict(np.zeros((4, 4, 4), np.float32), SPACING, prob_label=14)


def test_band_model_helper_is_a_stage_model():
    model = band_stage_model("tumor")
    assert isinstance(model.network, BandNet) and model.channel_labels[-1] == 14
    ct = torch.full((16, 32, 32), -1000.0)
    ct[4:8, 4:8, 4:8] = 750.0  # label 7 at 100 * 7 + 50 HU
    labels = model.predict(ct, SPACING).labels
    assert set(torch.unique(labels).tolist()) == {0, 7} and int((labels == 7).sum()) == 64


@pytest.mark.slow
@pytest.mark.parametrize("fwd", [(0, 1, 2), (2, 0, 1)])
def test_matches_nnunet_predictor_on_the_model_grid(fwd):
    """Same network and plans through nnU-Net's own predictor (no resampling, uniform tiles)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    spacing_model = tuple(SPACING[a] for a in fwd)
    patch_model = tuple((16, 32, 32)[a] for a in fwd)
    plans = tiny_plans(transpose_forward=fwd, spacing=spacing_model, patch_size=patch_model)
    ours = tiny_stage_model("organ", seed=3, plans=plans)
    manager = PlansManager(plans)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=False, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.manual_initialization(ours.network, manager, manager.get_configuration("3d_tiny"),
                                    [ours.network.state_dict()], tiny_dataset_json("organ"),
                                    "nnUNetTrainer", None)
    ct = smooth_ct((24, 44, 40)).numpy()
    ref = predictor.predict_single_npy_array(ct[None], {"spacing": list(ours.spacing)})
    labels = ours.predict(ct, ours.spacing).labels.numpy()
    assert labels.shape == ref.shape
    assert (labels == ref).mean() > 0.995  # random-net near-ties differ by float summation order


REAL_CT = real_path(CT)


@pytest.mark.real_data(CT)
def test_real_ct_through_the_pipeline():
    from c2fseg.io import read_image

    volume = read_image(REAL_CT)
    model = band_stage_model("coarse", {1: 60.0}, spacing=(3.5, 3.0, 3.0), patch_size=(64, 128, 128), step=1.0)
    pred = model.predict(volume.array, volume.spacing)
    labels = pred.labels.numpy()
    assert labels.shape == volume.shape
    assert set(np.unique(labels)) == {0, 1}
    assert (labels[volume.array < -800] == 0).mean() > 0.99  # air stays background
    assert (labels[(volume.array > 20) & (volume.array < 100)] == 1).mean() > 0.9  # soft tissue


def test_default_tile_batch_pairs_small_cpu_tiles():
    from c2fseg.infer.precision import default_tile_batch

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_tile_batch(cpu, (32, 48, 48)) == 2 and default_tile_batch(cpu, (64, 64, 64)) == 2
    assert default_tile_batch(cpu, (64, 160, 224)) == 1
    assert default_tile_batch(cuda, (64, 160, 224)) == 2
    model = tiny_stage_model("coarse", seed=7)
    assert model.tile_batch == default_tile_batch(model.device, model.patch_size)
