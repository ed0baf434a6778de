r"""Training a cell and its readout with kpref's own gradients: optimizers, minibatches, resumable runs.

* :func:`train` — full-batch or minibatch (``batch_fn=``) training by
  :class:`GD`, :class:`SGD` (momentum, Nesterov) or :class:`Adam`, with
  global-norm gradient clipping, a loss tolerance, checkpoints and bitwise
  resume;
* optimizers (:mod:`kpref.training._optim`): objects with ``step``,
  ``state_dict`` and ``load_state_dict``, torch's definitions written out;
  :func:`clip_grad_norm`;
* minibatches (:mod:`kpref.training._batches`): :func:`pool_batches`, and
  :func:`trivial_loss` (the batch-mean predictor's loss);
* run folders (:mod:`kpref.training._checkpoint`): a manifest, atomic writes,
  and the only readers, :func:`load_checkpoint` and :func:`load_run`.
"""

from ._batches import PoolBatches, pool_batches, trivial_loss
from ._checkpoint import Checkpoint, Readout, Run, load_checkpoint, load_run
from ._optim import GD, SGD, Adam, Optimizer, clip_grad_norm
from ._train import GradientResult, TrainResult, init_readout, loss_and_gradient, train

__all__ = ["Checkpoint", "Readout", "Run", "TrainResult", "GradientResult", "init_readout", "load_checkpoint",
           "load_run", "loss_and_gradient", "train", "Optimizer", "GD", "SGD", "Adam", "clip_grad_norm",
           "PoolBatches", "pool_batches", "trivial_loss"]

from . import _batches, _checkpoint, _optim  # noqa: E402  (their Notes are part of this package's documentation)

__doc__ = "\n\n".join([__doc__, "Optimizers\n==========\n" + _optim.__doc__,
                       "Minibatches and the trivial loss\n================================\n" + _batches.__doc__,
                       "Run folders and checkpoints\n===========================\n" + _checkpoint.__doc__])
