"""Datasets of co-registered patch pairs for training: the format, its writer and readers.

``geochange.data.patches`` holds the format (:class:`PatchWriter`, :class:`PatchDataset`), the
LEVIR-CD folder reader and :func:`open_dataset`; ``geochange.data.tile.tile`` cuts any two
rasters into such a dataset (import it from its module: the name ``tile`` is the module here).
"""

from geochange.data.patches import LevirDataset, PatchDataset, PatchWriter, open_dataset

__all__ = ["LevirDataset", "PatchDataset", "PatchWriter", "open_dataset"]
