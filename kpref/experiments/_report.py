r"""``python -m kpref report``: train small recurrent networks and show, with exact operators, how they collapse.

Notes
-----
The command runs the two experiments of :mod:`kpref.experiments._experiments`:

1. *dynamic collapse* — for each cell in ``--cells`` and each gain in
   ``--g``: train on memory-pro and, at every checkpoint, record the loss,
   the effective ranks of ``K``, ``P`` and ``NTK``, their per-axis effective
   dimensions, the PCA dimension of the hidden states and the leading
   Lyapunov exponent;
2. *multi-task alignment* — for each cell, at one gain (``--alignment-g``;
   default the middle value of ``--g``, rounding down): train on
   ``multitask`` and record, per pair of sub-tasks, the alignment of their
   hidden-state gradient flows ``−NTK e_a``, of their sub-task operators and
   of their hidden-state subspaces.

It writes into ``--out`` (default ``kpref-report``):

* ``report.json``: ``{"config": {...}, "runs": [{"experiment": "collapse" |
  "alignment", "cell", "g", "checkpoints": [{"step", "loss",
  "effective_rank": {"K", "P", "NTK"}, "effective_dimensions", ...}], ...}],
  "figures": [...], "summary": [...], "seconds", "versions"}`` — non-finite
  numbers are written as ``null``;
* ``losses.png``, ``effective_ranks.png``, ``pca_trajectories.png``,
  ``alignment.png``;
* with ``--save-checkpoints``, the training checkpoints
  (``checkpoints/<experiment>_<cell>_g<g>/checkpoint_<step:07d>.npz``, loadable
  with :func:`kpref.load_checkpoint`),

and prints a summary table on stdout (progress on stderr).

The run owns ``--out``. A folder holding another report run (its
``manifest.json``) is refused unless ``--overwrite`` is given; a non-empty
folder that is not a report folder is always refused (nothing of the user's
is replaced). Every file is first written, atomically (temporary file +
``os.replace`` in the same folder), into a hidden staging folder
``--out/.kpref-staging-<run id>/``; when everything is written the run
commits: it marks the folder ``INCOMPLETE``, moves each file into place
with ``os.replace``, writes ``manifest.json`` (``kind``, ``status``,
``run_id``, the configuration, the kpref and library versions, the seed, the
command line and the size and SHA-256 of every file) and removes the mark.
Ctrl-C (SIGINT) before the commit leaves the previous complete report
untouched (the staging folder is removed), and is deferred during the
commit's renames; the command prints one line and exits with status 130.
A process killed (SIGKILL) during the commit leaves the ``INCOMPLETE`` mark;
:func:`read_report` refuses such a folder, and any file that does not match
the manifest.

``--quick``: ``H = 16``, ``B = 12`` trials of ``T = 35`` steps, 150 Adam
steps (η = 1e-2), 4 checkpoints, ``g ∈ {0.5, 2.0}`` — every summary exact.
Without it: the KPFlow paper's sizes, ``H = 256``, ``B = 20``, ``T = 90``,
1000 Adam steps (η = 1e-2; η = 1e-3 left g ≤ 1 runs on the batch-mean plateau), 6 checkpoints, ``g ∈ {0.5, 1.0, 2.0}``; the
operator summaries are then randomized (see :mod:`kpref.experiments._experiments`).
``--hidden``, ``--steps``, ``--g``, ``--cells``, ``--seed``, ``--method``
override either. ``--jobs N`` runs N of the (independent, separately
seeded) runs at once on local processes (:mod:`kpref.experiments._executors`);
the report is the same bit for bit, and the memory check counts N runs.

User mistakes (an unknown cell, ``g ≤ 0``, a non-integer or negative size or
seed, a size whose arrays would not fit in ``--memory-limit``, an unwritable
or foreign ``--out``) print one line ``kpref report: error: …`` on stderr and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

from . import _experiments as ex
from ._executors import run_local
from .. import tasks as _tasks
from .._checks import check_memory_limit, check_positive_int
from .._atomic import TMP_PREFIX, atomic_write, file_sha256
from .._signals import sigint_deferred

__all__ = ["add_arguments", "main", "run_report", "read_report", "summary_table", "write_figures",
           "ReportFolderError"]

DEFAULT_OUT = "kpref-report"
FIGURES = ("losses.png", "effective_ranks.png", "pca_trajectories.png", "alignment.png")
MANIFEST = "manifest.json"
INCOMPLETE = "INCOMPLETE"
REPORT_KIND = "kpref report"
_STAGING_PREFIX = ".kpref-staging-"
_TMP_PREFIX = TMP_PREFIX
#: Names a report run writes into ``--out`` (a folder holding only these, and hidden leftovers of
#: ours, is a report folder even without a manifest: reports written before manifests existed).
_REPORT_NAMES = frozenset(FIGURES) | {"report.json", "checkpoints", MANIFEST, INCOMPLETE}
#: ``--tiny`` (hidden, for tests): a run of a few seconds that still exercises every file.
_TINY = dict(hidden_size=4, batch_size=4, fixation_steps=2, stimulus_steps=2, memory_steps=2, response_steps=3,
             grace_steps=1, steps=6, num_checkpoints=3, cells=("elman",), gains=(1.0,))
#: 2**62: larger integers are refused before any arithmetic (a step count, a size or a seed this large
#: cannot be meant; NumPy would overflow int64 on it).
_MAX_INT = 2**62


class ReportFolderError(ValueError):
    """``--out`` holds files of another run, foreign files, or an incomplete report."""


# --------------------------------------------------------------- arguments
def add_arguments(parser):
    """Add the ``report`` options to an ``argparse`` (sub)parser."""
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (H=16, 150 steps, g=0.5,2.0); a few minutes on 2 cores")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--cells", default=None, help="comma-separated cells (default gru,elman)")
    parser.add_argument("--g", default=None, help="comma-separated initial recurrent gains g > 0 "
                                                  "(default 0.5,1.0,2.0; --quick 0.5,2.0)")
    parser.add_argument("--alignment-g", default=None, help="gain of the multi-task runs "
                                                            "(default the middle --g value)")
    parser.add_argument("--hidden", default=None, help="hidden size H (default 256; --quick 16)")
    parser.add_argument("--steps", default=None, help="training steps (default 1000; --quick 150)")
    parser.add_argument("--seed", default="0", help="seed of the task batches and initializations (default 0)")
    parser.add_argument("--method", default="auto", help="operator summaries: auto (exact when the dense "
                                                         "factors fit in 512 MiB), exact or randomized")
    parser.add_argument("--save-checkpoints", action="store_true", help="write the training checkpoints (.npz)")
    parser.add_argument("--jobs", default="1", help="runs at once on local processes (default 1); the report is "
                                                     "the same whatever the number")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report already in --out (never needed for a new or empty folder)")
    parser.add_argument("--memory-limit", default=None,
                        help="bytes the run's arrays may take (default 2 GiB); a larger run is refused up front")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    return parser


def _parse_int(name, text):
    try:
        value = int(text, 10)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an integer, got {text!r}") from None
    if abs(value) > _MAX_INT:
        raise ValueError(f"{name}: expected an integer of at most {_MAX_INT}, got {text!r}")
    return value


def _parse_float(name, text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name}: expected a finite number > 0, got {text!r}")
    return value


def _parse_list(name, text, parse):
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ValueError(f"{name}: expected a comma-separated list without empty items, got {text!r}")
    values = [parse(f"{name}", item) for item in items]
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: expected distinct values, got {text!r}")
    return tuple(values)


def config_from_args(args):
    """The checked :class:`ExperimentConfig` for parsed command-line ``args`` (ValueError on bad input)."""
    base = ex.ExperimentConfig.quick() if args.quick else ex.ExperimentConfig()
    if getattr(args, "tiny", False):
        base = ex.ExperimentConfig.quick(**_TINY)
    overrides = {"seed": _parse_int("--seed", args.seed), "method": args.method}
    if args.cells is not None:
        overrides["cells"] = _parse_list("--cells", args.cells, lambda n, s: s.lower())
    if args.g is not None:
        overrides["gains"] = _parse_list("--g", args.g, _parse_float)
    if args.alignment_g is not None:
        overrides["alignment_gain"] = _parse_float("--alignment-g", args.alignment_g)
    if args.hidden is not None:
        overrides["hidden_size"] = _parse_int("--hidden", args.hidden)
    if args.steps is not None:
        overrides["steps"] = _parse_int("--steps", args.steps)
        overrides["num_checkpoints"] = min(base.num_checkpoints, overrides["steps"] + 1)
    try:
        return replace(base, **overrides).checked()
    except ValueError as err:
        # name the command-line option rather than the config field
        msg = str(err)
        for field, option in (("hidden_size/batch_size/steps", "--hidden/--steps"), ("hidden_size", "--hidden"),
                              ("cells[", "--cells["), ("g[", "--g["),
                              ("alignment_gain", "--alignment-g"), ("method", "--method"),
                              ("num_checkpoints", "--steps (number of checkpoints)")):
            if msg.startswith(field):
                msg = option + msg[len(field):]
                break
        if msg.startswith(("steps", "seed")):
            msg = "--" + msg
        raise ValueError(msg) from None


def check_writable(out):
    """Create ``out`` if needed and prove a file can be written there (OSError → ValueError naming ``--out``)."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=_TMP_PREFIX + "write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"--out: cannot write to {out!r} ({reason})") from None
    return out


def run_memory_bytes(config):
    """Bytes the largest arrays of one run of ``config`` take at once (a bound checked before starting).

    Per run (runs are sequential): the task batch (x, target, mask: multitask
    is the larger), the loss history (``steps + 1``), θ with Adam's two
    moments and every checkpoint's copy, the linearization's trajectory,
    step-point caches (≤ 16 floats per state entry and step) and dense
    ``A_t`` (``B·T·S²`` when materialized, ``S ≤ 32``), and the dense
    factors of the exact summaries (``method='exact'``, or ``'auto'`` within
    ``dense_limit``).
    """
    task = _tasks.multitask(1, 0, rules=tuple(config.rules), **config.task_kwargs())
    B, T, N = config.batch_size, task.x.shape[1], task.x.shape[2]
    O = task.target.shape[2]
    worst = 0
    for name in config.cells:
        cell = ex.make_cell(name, N, config.hidden_size)
        S, p = cell.state_size, cell.num_params
        need = 8 * B * T * (N + 2 * O)                    # x, target, mask
        need += 8 * (config.steps + 1)                    # losses
        need += 8 * p * (3 + config.num_checkpoints)      # θ, Adam m and v, checkpoints
        need += 8 * B * T * S * 17                        # z, caches
        if S <= 32:
            need += 8 * B * T * S * S                     # materialized A_t
        dense = ex.dense_bytes(B, T, S, p)
        if config.method == "exact" or (config.method == "auto" and dense <= config.dense_limit):
            need += dense
        worst = max(worst, need)
    return worst


def check_run_memory(config, memory_limit, jobs=1):
    """Refuse (ValueError naming the options) a run whose arrays would exceed ``memory_limit`` bytes
    (``jobs`` runs at once hold ``jobs`` times one run's arrays)."""
    limit = check_memory_limit(memory_limit, "--memory-limit")
    jobs = check_positive_int("--jobs", jobs)
    try:
        need = jobs * run_memory_bytes(config)
    except ValueError as err:           # a cell too large to build: name the option
        raise ValueError(f"--hidden: {err}") from None
    if need > limit:
        raise ValueError(
            f"--hidden/--steps/--jobs: the run needs about {need / 2**30:.3g} GiB of arrays "
            f"(H={config.hidden_size}, B={config.batch_size}, steps={config.steps}, jobs={jobs}), above the "
            f"limit of {limit / 2**30:.3g} GiB; use smaller sizes, fewer --jobs or pass a larger "
            "--memory-limit (bytes)")
    return need


# ------------------------------------------------------------ the run's folder
def _folder_entries(out):
    """Names in ``out`` split into (ours, hidden leftovers of ours, foreign)."""
    ours, leftovers, foreign = [], [], []
    for name in sorted(os.listdir(out)):
        if name.startswith((_STAGING_PREFIX, _TMP_PREFIX)):
            leftovers.append(name)
        elif name in _REPORT_NAMES:
            ours.append(name)
        else:
            foreign.append(name)
    return ours, leftovers, foreign


def _read_manifest(out):
    path = os.path.join(out, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ReportFolderError(f"--out: {path!r} is not a readable report manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != REPORT_KIND:
        raise ReportFolderError(f"--out: {path!r} is not a kpref report manifest")
    return manifest


def claim_folder(out, overwrite=False):
    """Make ``out`` this run's folder, or raise :class:`ReportFolderError` (a ValueError) naming ``--out``.

    A new or empty folder is claimed. A report folder (``manifest.json``,
    ``INCOMPLETE`` or only report files) is claimed with ``overwrite=True``
    only: its files are replaced at the commit, not before. A folder with
    any other file is never claimed. Hidden staging or temporary leftovers
    of an interrupted run are removed.
    """
    check_writable(out)
    ours, leftovers, foreign = _folder_entries(out)
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise ReportFolderError(
            f"--out: {out!r} holds files that are not a kpref report's ({shown}); choose a new or empty folder "
            "(--overwrite replaces only a previous report, never other files)")
    if ours and not overwrite:
        manifest = _read_manifest(out) if MANIFEST in ours and INCOMPLETE not in ours else None
        what = ("an incomplete report (a run was killed while moving its files in)" if INCOMPLETE in ours
                else f"the report of run {manifest.get('run_id')} (seed {manifest.get('seed')})" if manifest
                else "a report")
        raise ReportFolderError(
            f"--out: {out!r} already holds {what}; pass --overwrite to replace it, or choose another folder")
    for name in leftovers:
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    return out


def _atomic_json(path, obj):
    data = json.dumps(obj, indent=1, allow_nan=False).encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))


def _file_table(folder):
    """{relative path: {"bytes", "sha256"}} of every file under ``folder`` (POSIX separators)."""
    table = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            table[rel] = {"bytes": os.path.getsize(full), "sha256": file_sha256(full)}
    return table


def _commit(staging, out, names):
    """Move the staged run into ``out``: mark INCOMPLETE, replace the files, write the manifest, unmark."""
    with sigint_deferred():
        mark = os.path.join(out, INCOMPLETE)
        atomic_write(mark, lambda fh: fh.write(
            b"A kpref report run was being moved into this folder and did not finish: its files may mix two "
            b"runs. Run the report again with --overwrite.\n"))
        manifest_path = os.path.join(out, MANIFEST)
        if os.path.exists(manifest_path):
            os.remove(manifest_path)
        for name in sorted(_REPORT_NAMES - {MANIFEST, INCOMPLETE}):
            path = os.path.join(out, name)
            if name in names:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        for name in names:
            src, dst = os.path.join(staging, name), os.path.join(out, name)
            if os.path.isdir(src):
                if os.path.lexists(dst):
                    shutil.rmtree(dst) if os.path.isdir(dst) and not os.path.islink(dst) else os.remove(dst)
                os.replace(src, dst)          # a directory: renamed whole
            else:
                os.replace(src, dst)
        os.replace(os.path.join(staging, MANIFEST), manifest_path)
        os.remove(mark)
        shutil.rmtree(staging, ignore_errors=True)


def _check_folder_path(out, name="out"):
    if isinstance(out, bytes) or not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a folder path (str or os.PathLike), got {type(out).__name__}")
    return os.fspath(out)


def read_report(out):
    """The report in ``out`` after checking it: manifest present, no INCOMPLETE mark, every file as listed.

    Raises :class:`ReportFolderError` (a ValueError naming ``out``) for an
    incomplete, mixed, truncated or foreign folder. Returns the dict of
    ``report.json``.
    """
    _check_folder_path(out)
    if os.path.exists(os.path.join(out, INCOMPLETE)):
        raise ReportFolderError(f"out: {out!r} holds an incomplete report (interrupted while being written); "
                                "run the report again with --overwrite")
    manifest = _read_manifest(out)
    if manifest is None:
        raise ReportFolderError(f"out: {out!r} has no {MANIFEST}; expected a folder written by kpref report")
    if manifest.get("status") != "complete":
        raise ReportFolderError(f"out: {out!r} manifest status is {manifest.get('status')!r}, expected 'complete'")
    listed = manifest.get("files", {})
    present = _file_table(out)
    present.pop(MANIFEST, None)
    hidden = [n for n in present if os.path.basename(n).startswith((_STAGING_PREFIX, _TMP_PREFIX))
              or n.startswith(_STAGING_PREFIX)]
    for n in hidden:
        present.pop(n)
    if present != listed:
        differ = sorted(set(present) ^ set(listed)) or sorted(n for n in listed if present[n] != listed[n])
        raise ReportFolderError(f"out: {out!r} files do not match its manifest (run {manifest.get('run_id')}): "
                                f"{differ[:5]}; the folder mixes runs or a file was changed")
    with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
        return json.load(fh)


# ------------------------------------------------------------------- runs
def alignment_gain(config):
    """The gain of the multi-task runs: ``config.alignment_gain`` or the middle of the sorted gains."""
    if config.alignment_gain is not None:
        return float(config.alignment_gain)
    gains = sorted(config.gains)
    return float(gains[(len(gains) - 1) // 2])


def _jsonable(obj):
    """Replace non-finite floats by None (strict JSON) and NumPy scalars by Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def run_report(config, out, *, progress=None, log=None, save_checkpoints=False, overwrite=False, argv=None,
               jobs=1):
    """Run both experiments for a checked config and write the report into ``out`` (module notes).

    Returns the report (the dict written to ``report.json``). ``log`` is a
    text stream for one line per finished run (``None``: silent);
    ``progress`` is passed to :func:`kpref.train` (tqdm bars). ``out`` must
    be new, empty, or (with ``overwrite=True``) hold a previous report;
    ``argv`` (the command line) is recorded in the manifest. ``jobs``: the
    runs are independent (each seeds its own generator) and run on that many
    local processes; the report is the same, bit for bit, whatever ``jobs``
    (only the recorded times differ). With ``jobs > 1`` and ``progress=None``
    the runs print progress lines (bars of parallel runs would collide).
    """
    config = config.checked()
    jobs = check_positive_int("jobs", jobs)
    claim_folder(out, overwrite)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{os.urandom(4).hex()}"
    staging = os.path.join(out, _STAGING_PREFIX + run_id)
    os.makedirs(staging)
    try:
        report = _run_into(config, staging, progress=progress, log=log, save_checkpoints=save_checkpoints,
                           jobs=jobs)
        names = sorted(os.listdir(staging))
        manifest = {"kind": REPORT_KIND, "status": "complete", "run_id": run_id, "seed": config.seed,
                    "kpref_version": report["versions"]["kpref"], "config": _jsonable(config.as_dict()),
                    "command": None if argv is None else list(argv), "versions": report["versions"],
                    "files": _file_table(staging)}
        _atomic_json(os.path.join(staging, MANIFEST), manifest)
        _commit(staging, out, names)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _one_run(experiment, cell, g, config, progress, checkpoint_dir):
    """One run of the report (module level: it is what a worker process calls)."""
    fn = ex.run_collapse if experiment == "collapse" else ex.run_alignment
    return fn(cell, g, config, progress=progress, checkpoint_dir=checkpoint_dir)


def _run_into(config, folder, *, progress, log, save_checkpoints, jobs=1):
    t_start = time.perf_counter()
    plan = [("collapse", cell, g) for cell in config.cells for g in config.gains]
    plan += [("alignment", cell, alignment_gain(config)) for cell in config.cells]
    if jobs > 1 and progress is None:
        progress = "lines"                  # bars of parallel runs would overwrite each other
    items = []
    for experiment, cell, g in plan:
        ckdir = None
        if save_checkpoints:
            ckdir = os.path.join(folder, "checkpoints", f"{experiment}_{cell}_g{g:g}")
        items.append((experiment, cell, g, config, progress, ckdir))
    results = [None] * len(plan)
    # longest runs first (alignment before collapse, gated cells, declaring gate_names, before the others), so
    # that with several jobs the last run to start is a short one (gated cells first measured 919 s against
    # 895 s and 888 s for this order at the paper's size, within the host's run-to-run spread); the order of
    # execution only: results are stored by position
    classes = ex._cell_classes()
    order = sorted(range(len(plan)), key=lambda i: (plan[i][0] != "alignment", not classes[plan[i][1]].gate_names, i))
    for done, (k, (record, art)) in enumerate(run_local(_one_run, [items[i] for i in order], jobs), start=1):
        i = order[k]
        results[i] = (record, art)          # stored by position: the report is the same whatever the order
        if log is not None:
            experiment, cell, g = plan[i]
            first, last = record["checkpoints"][0], record["checkpoints"][-1]
            print(f"[{done}/{len(plan)}] {experiment:9s} {cell:5s} g={g:<4g} loss {first['loss']:.3g} -> "
                  f"{last['loss']:.3g}  ({record['seconds']:.1f} s)", file=log, flush=True)
    runs = [record for record, _ in results]
    artifacts = [art for _, art in results]
    report = {
        "config": config.as_dict(),
        "runs": runs,
        "figures": list(FIGURES),
        "summary": summary_rows(runs),
        "seconds": None,
        "versions": _versions(),
    }
    write_figures(runs, artifacts, folder)
    report["seconds"] = time.perf_counter() - t_start
    report = _jsonable(report)
    _atomic_json(os.path.join(folder, "report.json"), report)
    return report


def _versions():
    import matplotlib
    import numba
    import scipy

    from .. import __version__

    return {"kpref": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "numba": numba.__version__, "matplotlib": matplotlib.__version__}


# ---------------------------------------------------------------- summary
def summary_rows(runs):
    """One row per run: first and last checkpoint values of the headline numbers."""
    rows = []
    for run in runs:
        c0, c1 = run["checkpoints"][0], run["checkpoints"][-1]
        row = {"experiment": run["experiment"], "cell": run["cell"], "g": run["g"],
               "step": [c0["step"], c1["step"]], "loss": [c0["loss"], c1["loss"]],
               "pca_dimension": [c0["pca_dimension"], c1["pca_dimension"]],
               "method": c1["method"], "trivial_loss": run.get("trivial_loss"),
               "did_not_learn": run.get("did_not_learn")}
        for op in ex.OPERATORS:
            row[f"erank_{op}"] = [c0["effective_rank"][op], c1["effective_rank"][op]]
        if "lyapunov" in c0:
            row["lyapunov"] = [c0["lyapunov"], c1["lyapunov"]]
        if "anticipation" in run:
            row["anticipation"] = run["anticipation"]["pearson_flow_alignment_vs_final_subspace_overlap"]
        rows.append(row)
    return rows


def _arrow(pair, fmt):
    def one(v):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)
    return f"{one(pair[0])} → {one(pair[1])}"


def summary_table(report):
    """The short text table printed at the end of ``report``: first → last checkpoint."""
    if not isinstance(report, dict) or not isinstance(report.get("summary"), list) or not report["summary"]:
        raise TypeError(f"report: expected the report dict (run_report / read_report) with a non-empty "
                        f"'summary' list, got {report!r:.80}")
    head = ("experiment", "cell", "g", "loss", "erank K", "erank P", "erank NTK", "PCA dim", "λ₁ / ρ(flow, overlap)")
    lines = []
    for row in report["summary"]:
        last = (_arrow(row["lyapunov"], ".3f") if "lyapunov" in row
                else ("n/a" if row.get("anticipation") is None else f"ρ = {row['anticipation']:+.2f}"))
        lines.append((row["experiment"], row["cell"], f"{row['g']:g}", _arrow(row["loss"], ".3g"),
                      _arrow(row["erank_K"], ".3g"), _arrow(row["erank_P"], ".4g"),
                      _arrow(row["erank_NTK"], ".3g"), _arrow(row["pca_dimension"], ".3g"), last))
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in lines]
    flagged = [r for r in report["summary"] if r.get("did_not_learn")]
    for r in flagged:
        out.append(f"did not learn: {r['experiment']} {r['cell']} g={r['g']:g} — final loss {r['loss'][1]:.4g} ≥ "
                   f"0.5 × trivial (batch-mean predictor) loss {r['trivial_loss']:.4g}")
    cfg = report["config"]
    out.append(f"(first → last checkpoint; H={cfg['hidden_size']}, B={cfg['batch_size']}, steps={cfg['steps']}; "
               f"λ₁: leading Lyapunov exponent per step; ρ: correlation over sub-task pairs of the early "
               f"gradient-flow alignment with the final hidden-subspace overlap)")
    return "\n".join(out)


# ---------------------------------------------------------------- figures
def _new_figure(nrows, ncols, width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _gain_colors(gains):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    order = sorted(gains)
    return {g: cmap(0.1 + 0.8 * i / max(len(order) - 1, 1)) for i, g in enumerate(order)}


def write_figures(runs, artifacts, out):
    """Write the four PNG figures of a report into ``out``; returns their paths."""
    if not isinstance(runs, (list, tuple)) or not runs or not all(isinstance(r, dict) for r in runs):
        raise TypeError(f"runs: expected a non-empty list of run records (dicts), got {runs!r:.80}")
    missing = [k for k in ("experiment", "cell", "g") if any(k not in r for r in runs)]
    if missing:
        raise ValueError(f"runs: expected run records (run_report's) with keys 'experiment', 'cell', 'g'; "
                         f"missing {missing}")
    if (not isinstance(artifacts, (list, tuple)) or len(artifacts) != len(runs)
            or not all(isinstance(a, dict) for a in artifacts)):
        raise TypeError(f"artifacts: expected a list of one artifact dict per run ({len(runs)}), got {artifacts!r:.80}")
    out = _check_folder_path(out)
    if not os.path.isdir(out):
        raise ValueError(f"out: expected an existing folder, got {out!r}")
    collapse = [(r, a) for r, a in zip(runs, artifacts) if r["experiment"] == "collapse"]
    align = [(r, a) for r, a in zip(runs, artifacts) if r["experiment"] == "alignment"]
    cells = list(dict.fromkeys(r["cell"] for r in runs))
    colors = _gain_colors(sorted({r["g"] for r in runs}))
    paths = []

    # 1. loss curves
    fig, axes = _new_figure(1, 2, 4.6, 3.4)
    for col, (pairs, title) in enumerate(((collapse, "memory-pro (collapse)"), (align, "multitask (alignment)"))):
        ax = axes[0, col]
        styles = {c: s for c, s in zip(cells, ("-", "--", ":", "-."))}
        for r, a in pairs:
            ax.plot(np.arange(len(a["losses"])), a["losses"], styles.get(r["cell"], "-"), color=colors[r["g"]],
                    label=f"{r['cell']} g={r['g']:g}")
        _log_axis(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (MSE)")
        ax.set_title(title)
        if pairs:
            ax.legend(fontsize=7)
    paths.append(_save(fig, out, "losses.png"))

    # 2. effective ranks, PCA dimension and leading Lyapunov exponent over training
    quantities = [("K", "erank K"), ("P", "erank P"), ("NTK", "erank NTK"), ("pca", "PCA dim. of h"),
                  ("lyapunov", "leading Lyapunov exp.")]
    ccells = list(dict.fromkeys(r["cell"] for r, _ in collapse)) or ["-"]
    fig, axes = _new_figure(len(ccells), len(quantities), 3.0, 2.5)
    for row, cell in enumerate(ccells):
        for col, (key, label) in enumerate(quantities):
            ax = axes[row, col]
            for r, _ in collapse:
                if r["cell"] != cell:
                    continue
                steps = [c["step"] for c in r["checkpoints"]]
                if key in ex.OPERATORS:
                    vals = [c["effective_rank"][key] for c in r["checkpoints"]]
                elif key == "pca":
                    vals = [c["pca_dimension"] for c in r["checkpoints"]]
                else:
                    vals = [c["lyapunov"] for c in r["checkpoints"]]
                ax.plot(steps, vals, "o-", color=colors[r["g"]], ms=3, label=f"g={r['g']:g}")
            if key in ex.OPERATORS:
                _log_axis(ax)
            if key == "lyapunov":
                ax.axhline(0.0, color="0.6", lw=0.8)
            ax.set_title(f"{cell}: {label}", fontsize=9)
            ax.set_xlabel("training step", fontsize=8)
            ax.tick_params(labelsize=7)
            if col == 0 and row == 0:
                ax.legend(fontsize=7)
    paths.append(_save(fig, out, "effective_ranks.png"))

    # 3. hidden-state PCA trajectories, first and last checkpoint
    from matplotlib import colormaps

    hsv = colormaps["hsv"]
    fig, axes = _new_figure(2, max(len(collapse), 1), 3.0, 2.7)
    for col, (r, a) in enumerate(collapse):
        for row, step in enumerate((min(a["pcs"]), max(a["pcs"]))):
            ax = axes[row, col]
            proj, ratio = a["pcs"][step]
            for b in range(proj.shape[0]):
                ax.plot(proj[b, :, 0], proj[b, :, 1] if proj.shape[2] > 1 else np.zeros(proj.shape[1]),
                        color=hsv(a["angle"][b] / (2 * np.pi)), lw=0.8)
                ax.plot(proj[b, -1, 0], proj[b, -1, 1] if proj.shape[2] > 1 else 0.0, "o",
                        color=hsv(a["angle"][b] / (2 * np.pi)), ms=2.5)
            var = ", ".join(f"{v:.0%}" for v in ratio[:2])
            ax.set_title(f"{r['cell']} g={r['g']:g}, step {step}\n(PC1, PC2: {var} of variance)", fontsize=8)
            ax.tick_params(labelsize=6)
    paths.append(_save(fig, out, "pca_trajectories.png"))

    # 4. alignment matrices
    panels = [("flow_alignment", "early"), ("flow_alignment", "final"), ("operator_alignment", "final"),
              ("subspace_overlap", "final")]
    fig, axes = _new_figure(max(len(align), 1), len(panels), 2.9, 2.7)
    image = None
    for row, (r, _) in enumerate(align):
        early = r["checkpoints"][1] if len(r["checkpoints"]) > 1 else r["checkpoints"][0]
        final = r["checkpoints"][-1]
        labels = [rule.replace("_", "\n") for rule in r["rules"]]
        for col, (key, when) in enumerate(panels):
            ck = early if when == "early" else final
            M = np.array(ck[key], dtype=float)
            ax = axes[row, col]
            image = ax.imshow(M, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
            for i in range(M.shape[0]):
                for j in range(M.shape[1]):
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=6)
            ax.set_xticks(range(len(labels)), labels, fontsize=5)
            ax.set_yticks(range(len(labels)), labels, fontsize=5)
            ax.set_title(f"{r['cell']} g={r['g']:g}: {key.replace('_', ' ')}\nstep {ck['step']}", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[:, -1].tolist(), shrink=0.8)
    paths.append(_save(fig, out, "alignment.png"))
    return paths


def _log_axis(ax):
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)

    def minor(v, _):                          # every minor tick within a decade, else only 2·10ᵏ and 5·10ᵏ
        lo, hi = ax.get_ylim()
        return f"{v:g}" if hi < 10 * lo or f"{v:g}"[0] in "25" else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _save(fig, out, name):
    return atomic_write(os.path.join(out, name), lambda fh: fig.savefig(fh, dpi=110, format="png"))


# -------------------------------------------------------------------- CLI
def main(args, *, stdout=None, stderr=None, argv=None):
    """Handle parsed ``report`` arguments: run, write, print the table. Returns the exit status.

    0 on success; 2 for a user mistake (one line on stderr); 130 on Ctrl-C
    (one line on stderr, ``--out`` left with the previous complete report).
    """
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:                                   # user mistakes: one line, status 2; anything later is a bug
        config = config_from_args(args)
        jobs = _parse_int("--jobs", args.jobs)
        check_run_memory(config, None if args.memory_limit is None else _parse_bytes(args.memory_limit), jobs)
        out = claim_folder(args.out, args.overwrite)
    except (ValueError, TypeError) as err:
        print(f"kpref report: error: {err}", file=stderr)
        return 2
    try:
        report = run_report(config, out, progress=False if args.quiet else None,
                            log=None if args.quiet else stderr, save_checkpoints=args.save_checkpoints,
                            overwrite=args.overwrite, argv=argv, jobs=jobs)
    except KeyboardInterrupt:
        state = ("holds an incomplete report (marked INCOMPLETE)" if os.path.exists(os.path.join(out, INCOMPLETE))
                 else "is unchanged")
        print(f"kpref report: interrupted; {out} {state}", file=stderr)
        return 130
    print(summary_table(report), file=stdout)
    print(f"wrote {os.path.join(out, 'report.json')} and {len(FIGURES)} figures in {out} "
          f"({report['seconds']:.0f} s)", file=stdout)
    return 0


def _parse_bytes(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--memory-limit: expected a number of bytes, got {text!r}") from None
    return check_memory_limit(value, "--memory-limit")
