r"""Checkpoints and run folders of :func:`kpref.train`: atomic writes, a manifest, validated reads.

A *run folder* (``train(..., checkpoint_dir=d)``) holds

* ``manifest.json``: ``{"format": "kpref-run-1", "kpref_version", "numpy_version",
  "config", "seed"}``. ``config`` is the run's identity (cell, output size,
  optimizer and its hyperparameters, reduction, clipping, SHA-256 of the
  data, the minibatch stream, and the initialization: seed or generator
  state, ``g``, SHA-256 of the initial ``θ`` and readout). The number of steps,
  the checkpoint schedule and the loss tolerance are not part of it: a run may
  be extended.
* ``checkpoint_<step>.npz`` (step zero-padded to 7 digits), plain ``.npz``
  (no pickle) with ``format`` (``"kpref-checkpoint-2"``), ``step``,
  ``theta``, ``w_out``, ``b_out``, ``loss``, ``losses`` (``losses[0 … step]``),
  ``eval_loss``, ``trivial_loss``, the optimizer state (``<optimizer>_<key>``,
  e.g. ``adam_m``, ``adam_v``, ``adam_count``), ``config`` (JSON, equal to the
  manifest's) and ``digest``: the SHA-256 of every other entry, taken in
  sorted key order over ``key``, ``dtype.str``, ``str(shape)`` and the C-order
  bytes (each as UTF-8 where text), so that a file changed by hand is refused.

Every file is written to a temporary ``<name>.<pid>.tmp`` in the folder,
flushed, fsynced and moved into place with ``os.replace``: an interrupted
write (Ctrl-C, SIGKILL, power loss) leaves the previous complete file or
none, plus at most a ``.tmp`` file that readers ignore and the next
:func:`kpref.train` in that folder removes.

A run owns its folder (:func:`claim_run_dir`): ``train`` refuses a folder
holding another run's manifest or checkpoints unless ``overwrite=True``, which
deletes them first. Files of other kinds are left alone and ignored.

:func:`load_checkpoint` is the only reader of a checkpoint and
:func:`load_run` the only reader of a run folder. Both check the file
completely and refuse, with a ``ValueError`` naming the argument and what is
wrong, a missing, truncated, corrupt, foreign or hand-edited file, a
checkpoint whose manifest is missing or describes another run, and a
loadable but inconsistent one (negative step, ``losses`` not of length
``step + 1``, ``loss ≠ losses[step]``, an optimizer state that no run can
reach, e.g. an update count other than ``step`` or a negative second moment).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import NamedTuple

import numpy as np

from ._optim import make_optimizer

__all__ = ["Readout", "Checkpoint", "Run", "load_checkpoint", "load_run", "claim_run_dir", "save_checkpoint",
           "CHECKPOINT_FORMAT", "RUN_FORMAT", "MANIFEST_NAME"]

CHECKPOINT_FORMAT = "kpref-checkpoint-2"
RUN_FORMAT = "kpref-run-1"
MANIFEST_NAME = "manifest.json"
_CHECKPOINT_RE = re.compile(r"checkpoint_(\d{7,})\.npz")
_BASE_KEYS = ("format", "step", "theta", "w_out", "b_out", "loss", "losses", "eval_loss", "trivial_loss",
              "config", "digest")


class Readout(NamedTuple):
    """Linear readout ``y = z_r W_outᵀ + b_out``: ``w_out`` (O, R), ``b_out`` (O,)."""

    w_out: np.ndarray
    b_out: np.ndarray


class Checkpoint(NamedTuple):
    """A saved training state (see :func:`load_checkpoint`).

    ``loss`` is ``losses[step]`` (the training loss at the parameters after
    ``step`` updates, on the batch of that step); ``eval_loss`` the loss on the
    fixed evaluation batch (the training batch in full-batch training) and
    ``trivial_loss`` the loss of the batch-mean predictor of the evaluation
    targets (:func:`kpref.training.trivial_loss`).
    """

    step: int
    theta: np.ndarray
    readout: Readout
    loss: float
    losses: np.ndarray
    optimizer_state: dict
    config: dict
    path: str | None
    eval_loss: float = float("nan")
    trivial_loss: float = float("nan")


class Run(NamedTuple):
    """A validated run folder (:func:`load_run`): ``path``, ``manifest`` (dict), ``config`` and ``checkpoints``."""

    path: str
    manifest: dict
    config: dict
    checkpoints: list

    @property
    def steps(self):
        """The checkpointed steps, increasing."""
        return [c.step for c in self.checkpoints]

    def thetas(self):
        """``(n_checkpoints, p)`` array of the cell parameters at each checkpoint (a new array)."""
        if not self.checkpoints:
            raise ValueError(f"run {self.path!r}: expected at least one checkpoint, got none")
        return np.stack([c.theta for c in self.checkpoints])


# --------------------------------------------------------------------------- writing
def _atomic_write(path, write):
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _digest(arrays):
    sha = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        sha.update(key.encode())
        sha.update(a.dtype.str.encode())
        sha.update(str(a.shape).encode())
        sha.update(a.tobytes())
    return sha.hexdigest()


def config_text(config):
    """The canonical JSON text of a configuration (sorted keys)."""
    return json.dumps(config, sort_keys=True)


def save_checkpoint(path, ck, optimizer_name):
    """Write :class:`Checkpoint` ``ck`` atomically to ``path`` (module Notes)."""
    arrays = dict(
        format=np.array(CHECKPOINT_FORMAT),
        step=np.array(ck.step, dtype=np.int64),
        theta=np.asarray(ck.theta, dtype=np.float64),
        w_out=np.asarray(ck.readout.w_out, dtype=np.float64),
        b_out=np.asarray(ck.readout.b_out, dtype=np.float64),
        loss=np.array(ck.loss, dtype=np.float64),
        losses=np.asarray(ck.losses, dtype=np.float64),
        eval_loss=np.array(ck.eval_loss, dtype=np.float64),
        trivial_loss=np.array(ck.trivial_loss, dtype=np.float64),
        config=np.array(config_text(ck.config)),
    )
    for key, value in ck.optimizer_state.items():
        arrays[f"{optimizer_name}_{key}"] = np.asarray(value)
    arrays["digest"] = np.array(_digest(arrays))
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def _manifest(config, seed):
    from .. import __version__

    return {"format": RUN_FORMAT, "kpref_version": __version__, "numpy_version": np.__version__,
            "config": config, "seed": seed}


def _write_manifest(directory, config, seed):
    text = json.dumps(_manifest(config, seed), sort_keys=True, indent=1).encode()
    _atomic_write(os.path.join(directory, MANIFEST_NAME), lambda f: f.write(text))


def _run_files(directory):
    """(manifest present, checkpoint names, .tmp names) of a folder."""
    names = os.listdir(directory)
    cks = sorted(n for n in names if _CHECKPOINT_RE.fullmatch(n))
    tmps = sorted(n for n in names if n.endswith(".tmp") and (n.startswith("checkpoint_")
                                                              or n.startswith(MANIFEST_NAME)))
    return MANIFEST_NAME in names, cks, tmps


def _differences(a, b, prefix=""):
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} there, {vb!r} here")
    return out


def claim_run_dir(directory, config, seed, *, overwrite=False, name="checkpoint_dir"):
    """Make ``directory`` the folder of the run ``config``: create it, or accept it if it is this run's.

    A folder holding another run's manifest, or checkpoints without a
    manifest, or an unreadable manifest, is refused with a ``ValueError``
    naming ``name`` and the differences, unless ``overwrite`` — then that
    run's checkpoints and manifest are deleted first. Stale ``.tmp`` files of
    interrupted writes are removed. Writes the manifest (atomically) when
    absent. Returns the folder path.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"{name}: expected a folder, got the file {directory!r}")
    os.makedirs(directory, exist_ok=True)
    has_manifest, cks, tmps = _run_files(directory)
    problem = None
    if has_manifest:
        try:
            manifest = _read_manifest(directory, name)
        except ValueError as exc:
            problem = str(exc)
        else:
            if manifest["config"] != config:
                diff = _differences(manifest["config"], config)
                problem = (f"{name}: {directory!r} holds another run (its manifest differs in "
                           f"{'; '.join(diff[:6])}{' …' if len(diff) > 6 else ''})")
    elif cks:
        problem = f"{name}: {directory!r} holds {len(cks)} checkpoint file(s) of a run without a manifest"
    for t in tmps:
        _unlink(os.path.join(directory, t))
    if problem is not None:
        if not overwrite:
            raise ValueError(f"{problem}; use another folder, or pass overwrite=True to delete that run's files")
        for n in cks:
            _unlink(os.path.join(directory, n))
        if has_manifest:
            _unlink(os.path.join(directory, MANIFEST_NAME))
        has_manifest = False
    if not has_manifest:
        _write_manifest(directory, config, seed)
    return directory


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- reading
def _read_manifest(directory, name):
    path = os.path.join(directory, MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{name}: expected a kpref run folder with {MANIFEST_NAME}, got {directory!r} without one"
                         ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{name}: {path!r} is not a readable kpref manifest (truncated or corrupt JSON)") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT
            or not isinstance(manifest.get("config"), dict)):
        raise ValueError(f"{name}: expected a kpref manifest ({RUN_FORMAT}) in {path!r}, got another JSON document")
    return manifest


def _fail(name, path, what):
    raise ValueError(f"{name}: checkpoint {path!r} {what}")


def _scalar(name, path, data, key, kind):
    a = data[key]
    if a.shape != () or a.dtype.kind not in kind:
        _fail(name, path, f"has an invalid {key!r}: expected a scalar of kind {kind!r}, got dtype {a.dtype} "
                          f"and shape {a.shape}")
    return a[()]


def _float_array(name, path, data, key, shape):
    a = data[key]
    if a.dtype != np.float64 or a.shape != shape:
        _fail(name, path, f"has an invalid {key!r}: expected float64 of shape {shape}, got {a.dtype} {a.shape}")
    if not np.all(np.isfinite(a)):
        _fail(name, path, f"has non-finite values in {key!r}")
    return np.array(a, copy=True)


def _n_params(cell_config):
    return int(sum(int(np.prod(s)) for s in cell_config["param_shapes"].values()))


def _read_npz(path, name):
    """Every entry of an ``.npz`` file as arrays, or a ValueError naming ``name``."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise ValueError(f"{name}: expected a kpref checkpoint file, got {path!r}, which does not exist") from None
    except OSError as exc:
        raise ValueError(f"{name}: could not open {path!r} ({exc.strerror})") from None
    if head != b"PK\x03\x04":
        raise ValueError(f"{name}: expected a kpref checkpoint (.npz, a zip archive), got {path!r}, which is not "
                         f"one ({'empty' if not head else 'other content'})")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception:  # zipfile, zlib, numpy format errors: the file is damaged
        raise ValueError(f"{name}: checkpoint {path!r} is truncated or corrupt (its .npz archive cannot be read)"
                         ) from None


def _check_checkpoint(data, path, name):
    """Validate the entries of a checkpoint file; returns a :class:`Checkpoint`."""
    if "format" not in data or data["format"].shape != () or data["format"].dtype.kind != "U":
        _fail(name, path, f"is not a kpref checkpoint (no 'format' entry; entries {sorted(data)})")
    fmt = str(data["format"])
    if fmt != CHECKPOINT_FORMAT:
        _fail(name, path, f"has format {fmt!r}; this kpref reads {CHECKPOINT_FORMAT!r} (written by another "
                          "version: retrain, or read it with the kpref that wrote it)")
    missing = [k for k in _BASE_KEYS if k not in data]
    if missing:
        _fail(name, path, f"lacks the entries {missing}")
    digest = str(_scalar(name, path, data, "digest", "U"))
    rest = {k: v for k, v in data.items() if k != "digest"}
    if _digest(rest) != digest:
        _fail(name, path, "does not match its digest: it was modified after kpref wrote it (hand-edited or "
                          "damaged)")
    try:
        config = json.loads(str(_scalar(name, path, data, "config", "U")))
        optimizer = config["optimizer"]
        hyper = config["optimizer_hyperparameters"]
        O, R = int(config["output_size"]), int(config["cell"]["output_size"])
        p = _n_params(config["cell"])
        init = config["init"]
        if not {"rng", "g", "theta_sha256", "readout_sha256"} <= set(init) or not isinstance(hyper, dict):
            raise KeyError("init")
    except (ValueError, KeyError, TypeError, AttributeError):
        _fail(name, path, "has a 'config' entry that is not a kpref training configuration")
    step = int(_scalar(name, path, data, "step", "iu"))
    if step < 0:
        _fail(name, path, f"has a negative step {step}")
    theta = _float_array(name, path, data, "theta", (p,))
    w_out = _float_array(name, path, data, "w_out", (O, R))
    b_out = _float_array(name, path, data, "b_out", (O,))
    losses = data["losses"]
    if losses.dtype != np.float64 or losses.ndim != 1 or losses.shape[0] != step + 1:
        _fail(name, path, f"has 'losses' of shape {losses.shape} ({losses.dtype}); expected step + 1 = {step + 1} "
                          "float64 values")
    losses = _float_array(name, path, data, "losses", (step + 1,))
    loss = _float_array(name, path, data, "loss", ())
    if loss != losses[step]:
        _fail(name, path, f"has loss {float(loss)!r} but losses[{step}] = {losses[step]!r}")
    eval_loss = float(_float_array(name, path, data, "eval_loss", ()))
    trivial = float(_float_array(name, path, data, "trivial_loss", ()))
    if min(losses.min(), eval_loss, trivial) < 0:
        _fail(name, path, "has a negative loss")
    prefix = f"{optimizer}_"
    extra = sorted(set(data) - set(_BASE_KEYS))
    foreign = [k for k in extra if not k.startswith(prefix)]
    if foreign:
        _fail(name, path, f"has entries {foreign} that a {optimizer!r} run does not write")
    state = {k[len(prefix):]: data[k] for k in extra}
    try:
        opt = make_optimizer(optimizer, p + O * R + O, hyper)
        opt.load_state_dict(state, name=f"{name}: optimizer state")
    except (ValueError, TypeError) as exc:
        _fail(name, path, f"holds an impossible optimizer state ({exc})")
    if opt.count != step:
        _fail(name, path, f"holds an optimizer state after {opt.count} updates at step {step}")
    return Checkpoint(step, theta, Readout(w_out, b_out), float(loss), losses, opt.state_dict(), config, path,
                      eval_loss, trivial)


def _load(path, name, manifest_config=None):
    path = os.fspath(path)
    ck = _check_checkpoint(_read_npz(path, name), path, name)
    if manifest_config is None:
        manifest_config = _read_manifest(os.path.dirname(os.path.abspath(path)), name)["config"]
    if ck.config != manifest_config:
        diff = _differences(manifest_config, ck.config)
        _fail(name, path, f"belongs to another run than its folder's {MANIFEST_NAME} ({'; '.join(diff[:4])})")
    return ck


def load_checkpoint(path, *, name="path"):
    """Read and validate a checkpoint written by :func:`kpref.train`; the only checkpoint reader.

    The file must sit in its run folder, next to the ``manifest.json`` of the
    run that wrote it (module Notes of :mod:`kpref.training`).

    Returns
    -------
    Checkpoint
        ``step``, ``theta``, ``readout``, ``loss``, ``losses`` (step + 1,),
        ``optimizer_state`` (dict of arrays with ``count``), ``config`` (dict),
        ``path``, ``eval_loss`` and ``trivial_loss``, all owned by the caller.

    Raises
    ------
    ValueError
        Naming ``name`` (the argument, default ``'path'``) and the problem, for
        a missing, truncated, corrupt, foreign, hand-edited or inconsistent
        file, or one whose manifest is missing or describes another run.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name}: expected a path to a checkpoint file, got {type(path).__name__}")
    return _load(os.fsdecode(path), name)


def load_run(directory, *, name="directory"):
    """Read and validate every checkpoint of a run folder (``train(..., checkpoint_dir=directory)``).

    Checks the manifest, every ``checkpoint_<step>.npz`` (as
    :func:`load_checkpoint`, and that its name gives its step), that every
    checkpoint belongs to the manifest's run, and that the loss histories agree
    (each checkpoint's ``losses`` is a prefix of the next one's, bit for bit):
    a folder mixing runs is refused. Files other than the manifest and
    checkpoints (including ``.tmp`` files of interrupted writes) are ignored.

    Returns
    -------
    Run
        ``path``, ``manifest``, ``config``, ``checkpoints`` (in step order,
        possibly empty), with ``run.steps`` and ``run.thetas()``.
    """
    if not isinstance(directory, (str, bytes, os.PathLike)):
        raise TypeError(f"{name}: expected a path to a run folder, got {type(directory).__name__}")
    directory = os.fsdecode(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{name}: expected a kpref run folder, got {directory!r}, which is not a folder")
    manifest = _read_manifest(directory, name)
    _, names, _ = _run_files(directory)
    checkpoints = []
    for n in names:
        ck = _load(os.path.join(directory, n), name, manifest["config"])
        if int(_CHECKPOINT_RE.fullmatch(n).group(1)) != ck.step:
            _fail(name, ck.path, f"holds step {ck.step}, not the step of its name")
        checkpoints.append(ck)
    checkpoints.sort(key=lambda c: c.step)
    for a, b in zip(checkpoints, checkpoints[1:]):
        if b.losses[: a.step + 1].tobytes() != a.losses.tobytes():
            _fail(name, b.path, f"has a loss history that disagrees with {os.path.basename(a.path)}'s: the folder "
                                "mixes runs")
    return Run(directory, manifest, manifest["config"], checkpoints)
