"""The shared trainer: one loop for every trainable model (``geochange train``), and its checkpoints."""

from geochange.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from geochange.train.data import PairStandardizer, TrainData, open_training_data
from geochange.train.trainer import TrainOptions, train, train_model

__all__ = ["PairStandardizer", "TrainData", "TrainOptions", "load_checkpoint", "load_model", "open_training_data",
           "save_checkpoint", "train", "train_model"]
