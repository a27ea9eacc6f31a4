"""Importing trained models as c2fseg stage folders (``c2fseg import``).

- :func:`import_hiasbuaa`: the four released FLARE23 HIASBUAA checkpoints -> ``coarse``,
  ``tumor``, ``tumor_2``, ``organ`` with the published pipeline's settings (``hiasbuaa.json``).
- :func:`import_nnunet`: an nnU-Net v1 model folder or v2 results folder -> one stage folder.
- :func:`write_stage_folders`: converted networks -> stage folders, atomically, all or none.
"""

from c2fseg.importers.hiasbuaa import import_hiasbuaa, published, stage_inference
from c2fseg.importers.nnunet import import_nnunet, mapped_channel_labels, read_labels_map
from c2fseg.importers.stage_folders import (
    ImportTargetError,
    StageFolder,
    write_stage_folder,
    write_stage_folders,
)

__all__ = [
    "ImportTargetError", "StageFolder", "import_hiasbuaa", "import_nnunet",
    "mapped_channel_labels", "published", "read_labels_map", "stage_inference",
    "write_stage_folder", "write_stage_folders",
]
