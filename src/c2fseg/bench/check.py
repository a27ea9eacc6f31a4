"""CUDA vs CPU label agreement of the same random-weight stage model on a small phantom.

``python -m c2fseg.bench.check [--device cuda] [--out FILE]``: the GPU script's first check that
the device path (fp16 autocast, on-device resampling and argmax) gives the labels the CPU path
(fp32) gives. The fp32 runs (the CPU reference and the device's fp32 run) are plain fp32: TF32
convolutions and matmuls are switched off for them (:func:`strict_fp32`) and restored after.
With random weights many voxels sit near decision boundaries, so every label differing is not a
bug; the check requires ``MIN_AGREEMENT`` of equal voxels for the device's fp32 run and for its
default precision (fp16 on CUDA). On ``--device cpu`` (the dry run of the GPU script) only the
fp32 run is made (bf16 convolutions are several times slower on a CPU, and CPU is not what this
check is for).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from c2fseg.argtypes import int_triple, positive_int
from c2fseg.bench.baseline import agreement
from c2fseg.bench.plans import CONFIGURATION, production_plans, stage_dataset_json

#: Fraction of voxels whose device label must equal the CPU fp32 label.
MIN_AGREEMENT = 0.995


def tf32_flags() -> dict[str, bool]:
    """The two switches that let CUDA fp32 convolutions / matmuls run in TF32."""
    return {"cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Plain fp32 inside the block: TF32 off for cuDNN and cuBLAS; the old flags restored after."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def precisions_for(device: str) -> tuple[str, ...]:
    """The precisions compared with the CPU fp32 reference, all required: fp32 and fp16 on CUDA,
    fp32 alone elsewhere (see the module docstring)."""
    return ("fp32", "fp16") if torch.device(device).type == "cuda" else ("fp32",)


def device_agreement(device: str = "cuda", seed: int = 0, width: int = 16,
                     patch: tuple[int, int, int] = (32, 64, 64)) -> dict:
    """Organ-stage labels of a small phantom on ``device`` (``precisions_for``) vs CPU fp32."""
    from c2fseg.data.phantom_case import generate_case
    from c2fseg.infer.stage_model import StageModel

    case = generate_case(seed, 0, size="small", tumor=True)
    spacing = case.geometry.canonical_spacing
    # the model works at the case's own spacing so the check stays small (seconds on a CPU)
    plans = production_plans("organ", width, spacing=[round(float(s), 3) for s in spacing],
                             patch=list(patch))
    dataset = stage_dataset_json("organ")
    torch.manual_seed(seed)
    ref = StageModel.from_plans(plans, dataset, CONFIGURATION, "organ", None, "cpu", precision="fp32")
    state = ref.network.state_dict()
    with strict_fp32():
        expected = ref.predict(case.image, spacing).labels.numpy()
    out = {"case_shape_zyx": list(case.image.shape), "spacing_zyx": list(spacing), "device": device,
           "min_agreement": MIN_AGREEMENT, "tf32_flags_outside_fp32_runs": tf32_flags()}
    for precision in precisions_for(device):
        model = StageModel.from_plans(plans, dataset, CONFIGURATION, "organ", state, device,
                                      precision=precision)
        with strict_fp32() if precision == "fp32" else nullcontext():
            got = model.predict(case.image, spacing).labels.cpu().numpy()
        out[precision] = agreement(expected, got)
    out["required"] = list(precisions_for(device))
    out["ok"] = all(out[p]["equal_fraction"] >= MIN_AGREEMENT for p in out["required"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--width", type=positive_int, default=16,
                        help="base features of the organ network (default 16; the dry run uses 4)")
    parser.add_argument("--patch", type=int_triple, default=(32, 64, 64), metavar="Z,Y,X")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to compare (use --device cpu for the dry run)")
        return 2
    result = device_agreement(args.device, width=args.width, patch=args.patch)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from c2fseg.fileutil import write_text_atomic

        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")
    verdict = "ok" if result["ok"] else "LOW (check the device path)"
    print(f"{args.device} vs CPU fp32 agreement (>= {MIN_AGREEMENT:.1%} required for "
          f"{', '.join(result['required'])}): {verdict}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
