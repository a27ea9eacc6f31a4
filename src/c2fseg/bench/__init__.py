"""``c2fseg bench``: speed and memory of the inference cascade, with nnU-Net's predictor as baseline."""

from c2fseg.bench.plans import production_plans, thin_plans
from c2fseg.bench.runner import BenchOptions, run_bench

__all__ = ["BenchOptions", "production_plans", "run_bench", "thin_plans"]
