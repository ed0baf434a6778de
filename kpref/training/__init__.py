"""Full-batch training of a cell and its readout with kpref's own gradients, with resumable checkpoints."""

from ._train import Checkpoint, GradientResult, Readout, TrainResult, init_readout, load_checkpoint, loss_and_gradient, train

__all__ = ["Checkpoint", "GradientResult", "Readout", "TrainResult", "init_readout", "load_checkpoint", "loss_and_gradient", "train"]
