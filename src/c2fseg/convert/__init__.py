"""Importing trained nnU-Net models (v1 ``Generic_UNet``, v2 ``PlainConvUNet``) as c2fseg networks.

- :func:`read_v1_checkpoint`: a bare nnU-Net v1 trainer checkpoint -> (architecture, weights).
- :func:`read_v1_model_folder` / :func:`read_v2_results_folder`: a whole model folder ->
  :class:`ImportedModel` (nnU-Net v2 plans, dataset.json, checked weights).
- :class:`UNetArchitecture` and :func:`make_plans`: plans for a network described as data.

Every failure is a :class:`ConversionError` naming the file and the fix.
"""

from c2fseg.convert.architecture import UNetArchitecture, build_from_plans_entry
from c2fseg.convert.checkpoint import read_checkpoint, v1_state_dict, v2_state_dict
from c2fseg.convert.errors import ConversionError
from c2fseg.convert.folders import detect_format
from c2fseg.convert.imported import ImportedModel
from c2fseg.convert.plans import make_dataset_json, make_plans
from c2fseg.convert.v1_keys import V1Network, convert_v1_state_dict, infer_v1_network, v1_layout
from c2fseg.convert.v1_model import read_v1_checkpoint, read_v1_model_folder
from c2fseg.convert.v1_plans import V1Plans, read_v1_plans
from c2fseg.convert.v2_model import read_v2_results_folder

__all__ = [
    "ConversionError", "ImportedModel", "UNetArchitecture", "V1Network", "V1Plans",
    "build_from_plans_entry", "convert_v1_state_dict", "detect_format", "infer_v1_network",
    "make_dataset_json", "make_plans", "read_checkpoint", "read_v1_checkpoint",
    "read_v1_model_folder", "read_v1_plans", "read_v2_results_folder", "v1_layout",
    "v1_state_dict", "v2_state_dict",
]
