"""An nnU-Net v2 results folder written by nnU-Net's own trainer (shared by the conversion and
import tests): what a user's ``nnUNet_results/<dataset>/<trainer>__<plans>__3d_fullres`` holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def nnunet_results_folder(root: Path, plans: dict, dataset_json: dict, seed: int = 4) -> Path:
    """``<dataset>/nnUNetTrainer__nnUNetPlans__3d_fullres`` written by nnU-Net's own trainer."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module
    from batchgenerators.utilities.file_and_folder_operations import save_json

    preprocessed = root / "preprocessed" / plans["dataset_name"] / "nnUNetPlans_3d_fullres"
    preprocessed.mkdir(parents=True)
    (preprocessed / "case_0.b2nd").write_bytes(b"")  # lets the trainer pick its dataset class
    with pytest.MonkeyPatch.context() as mp:  # nnU-Net reads its folders at import time
        mp.setattr(trainer_module, "nnUNet_results", str(root / "results"))
        mp.setattr(trainer_module, "nnUNet_preprocessed", str(root / "preprocessed"))
        trainer = trainer_module.nnUNetTrainer(plans, "3d_fullres", 0, dataset_json,
                                               device=torch.device("cpu"))
    torch.manual_seed(seed)  # nnU-Net initialises the network from the global generator
    trainer.initialize()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in trainer.network.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() == 1:
                p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.2 * noise)
            else:
                p.add_(0.05 * noise * p.std().clamp(min=1e-3))
    trainer.save_checkpoint(f"{trainer.output_folder}/checkpoint_final.pth")
    save_json(trainer.plans_manager.plans, f"{trainer.output_folder_base}/plans.json", sort_keys=False)
    save_json(trainer.dataset_json, f"{trainer.output_folder_base}/dataset.json", sort_keys=False)
    return root / "results" / plans["dataset_name"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
