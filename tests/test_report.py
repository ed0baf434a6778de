"""Experiments (collapse, alignment) and the ``python -m kpref report`` command.

The summaries of :mod:`kpref.experiments._experiments` are held against the exact
definitions (dense matrices, :mod:`kpref.analysis`); the command is checked
for its schema, its files and its handling of user mistakes. The full
``report --quick`` run is marked ``slow`` and ``report``.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kpref
from kpref import experiments as ex
from kpref import analysis
from kpref import experiments as _report
from kpref.__main__ import main as cli_main
from tests.helpers import rel as _rel

ROOT = Path(__file__).resolve().parents[1]
TINY = ex.ExperimentConfig.quick(hidden_size=4, batch_size=4, fixation_steps=2, stimulus_steps=2, memory_steps=2,
                                 response_steps=3, grace_steps=1, steps=6, num_checkpoints=3, cells=("elman",),
                                 gains=(1.0,))


def _lin(cell_name, B=3, T=6, H=5, g=1.0, seed=0):
    rng = np.random.default_rng(seed)
    cell = ex.make_cell(cell_name, 3, H)
    return kpref.linearize(cell, cell.init_params(rng, g=g), rng.standard_normal((B, T, 3)))


# ------------------------------------------------------------------ exact summaries
@pytest.mark.parametrize("cell_name", ["gru", "elman"])
def test_exact_summaries_match_analysis(cell_name):
    lin = _lin(cell_name)
    erank, dims, used, extra = ex.operator_summaries(lin, method="exact")
    assert used == "exact"
    ref_dims = analysis.effective_dimensions(lin, method="exact")
    for op in ex.OPERATORS:
        assert _rel(erank[op], analysis.effective_rank(getattr(lin, op))) <= 1e-12
        for axis in ex.AXES:
            assert _rel(dims[op][axis], ref_dims[op][axis]) <= 1e-12
    PJ = kpref.todense(lin.P) @ kpref.todense(lin.J_theta)
    assert np.allclose(extra["PJ"], PJ, rtol=0, atol=1e-12 * np.abs(PJ).max())


def test_factor_summaries_catch_a_wrong_factor():
    """The Gram-matrix shortcut is not vacuous: the wrong factor gives the wrong K summaries."""
    lin = _lin("elman")
    J = kpref.todense(lin.J_theta)
    wrong = J.copy()
    wrong[:, 0] *= 3.0
    erank, dims, _ = ex.factor_summaries(wrong, lin.shape)
    assert _rel(erank, analysis.effective_rank(lin.K)) > 1e-3
    ref = analysis.effective_dimensions(lin, operators=("K",))["K"]
    assert max(_rel(dims[a], ref[a]) for a in ex.AXES) > 1e-3


@given(st.integers(2, 5), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_participation_ratio_and_pca_dimension(n, B, T, seed):
    rng = np.random.default_rng(seed)
    A = rng.uniform(-1, 1, (n, n))
    M = A @ A.T
    lam = np.linalg.eigvalsh(M)
    assert _rel(ex.participation_ratio(M), lam.sum() ** 2 / np.sum(lam**2)) <= 1e-12
    h = rng.uniform(-1, 1, (B + 1, T + 1, n))
    lam = np.clip(np.linalg.eigvalsh(np.cov(h.reshape(-1, n).T)), 0, None)
    assert _rel(ex.pca_dimension(h), lam.sum() ** 2 / np.sum(lam**2)) <= 1e-10


def test_effective_rank_dense_reference():
    assert ex.effective_rank_dense(np.diag([1.0, 1.0, 0.0])) == pytest.approx(2.0, rel=1e-15)
    assert ex.effective_rank_dense(np.diag([2.0, 1.0])) == pytest.approx(25.0 / 17.0, rel=1e-15)


# ------------------------------------------------------------ randomized summaries
@pytest.mark.parametrize("cell_name", ["gru", "elman"])
def test_randomized_summaries_near_exact(cell_name):
    """Seeded Hutch++ ranks and Hutchinson dimensions within 5 of their own standard errors.

    Each randomized value comes with a standard error (the effective rank: delta method on the Hutch++
    errors of tr A and ‖A‖_F²; a dimension: the jackknife of its leave-one-out ratio). 5 of them is a
    two-sided Gaussian band of probability 6e-7 per value, 1e-5 over the 24 values here (measured:
    ≤ 1.2 and ≤ 3.9 standard errors). The dimensions' errors are those of the same draws: the
    summaries' generator replayed (effective rank, then dimensions, per operator).
    """
    lin = _lin(cell_name)
    erank, dims, _, _ = ex.operator_summaries(lin, method="exact")
    erank_r, dims_r, used, extra = ex.operator_summaries(lin, method="randomized", n_probes=60, rng=1)
    assert used == "randomized" and set(extra["effective_rank_error"]) == set(ex.OPERATORS)
    gen = np.random.default_rng(1)
    for op in ex.OPERATORS:
        err = extra["effective_rank_error"][op]
        if op in extra["exact"]:   # K through its per-unit blocks: exact, draws no probes (rounding-level agreement)
            assert err == 0.0 and _rel(erank_r[op], erank[op]) <= 1e-10
            assert all(_rel(dims_r[op][a], dims[op][a]) <= 1e-10 for a in ex.AXES)
            continue
        assert 0 < err and abs(erank_r[op] - erank[op]) <= 5 * err
        value, err_again = analysis.effective_rank(getattr(lin, op), method="hutch++", n_probes=60, rng=gen,
                                                   return_error=True)
        assert (value, err_again) == (erank_r[op], err)
        with_errors = analysis.effective_dimensions(lin, operators=(op,), method="hutchinson", n_probes=60, rng=gen,
                                                    return_error=True)[op]
        for axis in ex.AXES:
            value, err = with_errors[axis]
            assert value == dims_r[op][axis]   # the same draws
            assert 0 < err and abs(value - dims[op][axis]) <= 5 * err
    again = ex.operator_summaries(lin, method="randomized", n_probes=60, rng=1)
    assert again[0] == erank_r and again[1] == dims_r                 # same seed, same numbers


def test_randomized_summaries_keep_K_exact():
    """In 'randomized' mode K's summaries come exactly from its per-unit blocks (error 0); P and NTK stay estimates."""
    lin = _lin("gru")
    erank, dims, _, _ = ex.operator_summaries(lin, method="exact")
    erank_r, dims_r, _, extra = ex.operator_summaries(lin, method="randomized", n_probes=12, rng=1)
    assert extra["exact"] == ("K",) and extra["effective_rank_error"]["K"] == 0.0
    assert _rel(erank_r["K"], erank["K"]) <= 1e-10
    for axis in ex.AXES:
        assert _rel(dims_r["K"][axis], dims["K"][axis]) <= 1e-10
    for op in ("P", "NTK"):
        assert extra["effective_rank_error"][op] > 0.0


def test_auto_method_switches_on_the_memory_limit():
    lin = _lin("elman", B=2, T=3, H=3)
    assert ex.operator_summaries(lin, method="auto")[2] == "exact"
    assert ex.operator_summaries(lin, method="auto", dense_limit=1, rng=0)[2] == "randomized"


def test_leading_lyapunov_of_a_linear_cell_is_log_spectral_radius():
    """Linear cell h' = W h + …: the leading exponent tends to log ρ(W) (finite-T error O(1/T))."""
    rng = np.random.default_rng(0)
    cell = kpref.Linear(2, 3)
    W = np.diag([0.5, 0.8, -1.3])
    theta = cell.init_params(rng)
    cell.unflatten(theta)["weight_hh"][...] = W
    lin = kpref.linearize(cell, theta, rng.standard_normal((2, 400, 2)))
    assert abs(ex.leading_lyapunov(lin, 0) - np.log(1.3)) <= 0.02


# ------------------------------------------------------------------ alignment pieces
def test_subtask_flows_sum_to_the_flow_and_predict_a_gradient_step():
    rng = np.random.default_rng(5)
    cell = kpref.Elman(5, 5)
    batch = kpref.tasks.multitask(6, rng, rules=("memory_pro", "memory_anti"), fixation_steps=2, stimulus_steps=2,
                                  memory_steps=1, response_steps=2, grace_steps=0)
    theta = cell.init_params(rng)
    readout = kpref.init_readout(cell, 3, rng)
    lin = kpref.linearize(cell, theta, batch.x)
    loss = kpref.mse_loss(lin.z, batch.target, readout.w_out, readout.b_out, mask=batch.mask, cell=cell)
    flows = ex.subtask_flows(lin, loss.e, batch.rule, 2)
    total = -lin.NTK.matvec(loss.e.ravel())
    assert np.linalg.norm(flows.sum(axis=1) - total) <= 1e-13 * np.linalg.norm(total)
    # a GD step of size η on sub-task 0 alone moves z by η f_0 + O(η²)
    e0 = loss.e.copy()
    e0[batch.rule != 0] = 0.0
    g0 = lin.grad(e0)
    errs = []
    for eta in (1e-3, 5e-4):
        dz = kpref.simulate(cell, theta - eta * g0, batch.x) - lin.z
        errs.append(np.linalg.norm(dz.ravel() - eta * flows[:, 0]))
    assert errs[1] / errs[0] == pytest.approx(0.25, abs=0.03)         # second order
    assert errs[0] <= 1e-2 * 1e-3 * np.linalg.norm(flows[:, 0])
    # sub-task losses add up to the loss
    parts = ex.subtask_losses(loss.y, batch.target, batch.mask, batch.rule, 2)
    assert sum(parts) == pytest.approx(loss.value, rel=1e-13)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_operator_alignment_is_the_cosine_of_the_subtask_operators(method):
    rng = np.random.default_rng(2)
    cell = kpref.GRU(5, 3)
    rule = np.array([0, 1, 2, 0, 1, 2])
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((6, 4, 5)))
    _, _, used, extra = ex.operator_summaries(lin, method=method, n_probes=200, rng=0)
    got = np.array(ex.subtask_operator_alignment(lin, rule, 3, used, extra, 200, np.random.default_rng(1)))
    F = (kpref.todense(lin.P) @ kpref.todense(lin.J_theta)).reshape(6, -1, lin.num_params)
    theta_ops = [np.einsum("bik,bil->kl", F[rule == a], F[rule == a]) for a in range(3)]
    ref = np.array([[analysis.alignment(theta_ops[a], theta_ops[b]) for b in range(3)] for a in range(3)])
    tol = 1e-12 if method == "exact" else 0.1
    assert np.max(np.abs(got - ref)) <= tol
    assert np.max(np.abs(ref - np.eye(3))) > 0.05                    # not trivially the identity


# --------------------------------------------------------------- schedule, config
@given(st.integers(1, 400), st.integers(2, 12))
def test_checkpoint_schedule(steps, n):
    n = min(n, steps + 1)
    marks = ex.checkpoint_schedule(steps, n)
    assert len(marks) == n and marks == sorted(set(marks))
    assert marks[0] == 0 and marks[-1] == steps and all(0 <= m <= steps for m in marks)


@pytest.mark.parametrize("field, value, match", [
    ("cells", ("gru", "nope"), "cells\\[1\\]"), ("gains", (1.0, 0.0), "g\\[1\\]"), ("gains", (-1.0,), "g\\[0\\]"),
    ("gains", (), "g:"), ("hidden_size", 2.5, "hidden_size"), ("hidden_size", 0, "hidden_size"),
    ("steps", True, "steps"), ("method", "dense", "method"), ("num_checkpoints", 10, "num_checkpoints"),
    ("n_probes", 2, "n_probes"), ("seed", -1, "seed")])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        replace(TINY, **{field: value}).checked()


# ------------------------------------------------------------------------ runs
def _check_schema(report, *, cells, gains, num_checkpoints, rules):
    assert set(report) >= {"config", "runs", "figures", "summary", "seconds", "versions"}
    cfg = report["config"]
    assert cfg["cells"] == list(cells) and cfg["gains"] == list(gains)
    collapse = [r for r in report["runs"] if r["experiment"] == "collapse"]
    align = [r for r in report["runs"] if r["experiment"] == "alignment"]
    assert sorted((r["cell"], r["g"]) for r in collapse) == sorted((c, g) for c in cells for g in gains)
    assert sorted(r["cell"] for r in align) == sorted(cells)
    for run in report["runs"]:
        assert set(run) >= {"experiment", "cell", "g", "checkpoints"}
        assert isinstance(run["g"], float) and run["g"] > 0
        cks = run["checkpoints"]
        assert len(cks) == num_checkpoints >= 3
        assert [c["step"] for c in cks] == sorted({c["step"] for c in cks}) and cks[0]["step"] == 0
        for c in cks:
            assert isinstance(c["step"], int) and isinstance(c["loss"], float) and c["loss"] >= 0
            assert set(c["effective_rank"]) == {"K", "P", "NTK"}
            assert all(isinstance(v, float) and v >= 1.0 - 1e-9 for v in c["effective_rank"].values())
            assert set(c["effective_dimensions"]) == {"K", "P", "NTK"}
            for dims in c["effective_dimensions"].values():
                assert set(dims) == {"batch", "time", "hidden"}
            assert c["method"] in ("exact", "randomized") and c["pca_dimension"] >= 1.0 - 1e-9
            if run["experiment"] == "collapse":
                assert isinstance(c["lyapunov"], float)
            else:
                R = len(rules)
                for key in ("flow_alignment", "operator_alignment", "subspace_overlap"):
                    M = np.array(c[key])
                    assert M.shape == (R, R) and np.allclose(M, M.T, atol=1e-12)
                    assert np.all(np.abs(M) <= 1 + 1e-12) and np.allclose(np.diag(M), 1.0, atol=1e-12)
                assert sum(c["subtask_loss"].values()) == pytest.approx(c["loss"], rel=1e-12)
        if run["experiment"] == "alignment":
            assert run["rules"] == list(rules) and "anticipation" in run
    assert len(report["summary"]) == len(report["runs"])


def test_run_report_tiny_writes_schema_and_figures(tmp_path):
    config = replace(TINY, cells=("elman", "gru"), gains=(0.5, 1.5))
    report = _report.run_report(config, str(tmp_path / "out"))
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["runs"] == report["runs"]
    _check_schema(on_disk, cells=("elman", "gru"), gains=(0.5, 1.5), num_checkpoints=3, rules=TINY.rules)
    for name in _report.FIGURES:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = _report.summary_table(report)
    flagged = [line for line in table.splitlines() if line.startswith("did not learn: ")]
    assert len(flagged) == sum(bool(r["did_not_learn"]) for r in report["runs"])
    assert "erank K" in table and len(table.splitlines()) == 2 + len(report["runs"]) + 1 + len(flagged)
    for r in report["runs"]:
        final = r["checkpoints"][-1]["loss"]
        assert r["trivial_loss"] > 0 and r["did_not_learn"] == (final >= 0.5 * r["trivial_loss"])


def test_runs_are_deterministic_and_checkpoints_reload(tmp_path):
    rec1, art1 = ex.run_collapse("elman", 1.0, TINY, checkpoint_dir=str(tmp_path))
    rec2, art2 = ex.run_collapse("elman", 1.0, TINY)
    for r in (rec1, rec2):
        r.pop("seconds"), r.pop("analysis_seconds")
    assert rec1 == rec2 and np.array_equal(art1["losses"], art2["losses"])
    last = kpref.load_checkpoint(str(tmp_path / f"checkpoint_{TINY.steps:07d}.npz"))
    assert last.loss == rec1["checkpoints"][-1]["loss"]


# ------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("argv, match", [
    (["--cells", "gru,lstmx"], "--cells\\[1\\]"), (["--g", "0.5,0"], "--g"), (["--g", "-1"], "--g"),
    (["--g", "nan"], "--g"), (["--g", "0.5,,1"], "--g"), (["--g", "1,1"], "distinct"),
    (["--hidden", "2.5"], "--hidden"), (["--hidden", "0"], "--hidden"), (["--steps", "ten"], "--steps"),
    (["--seed", "-3"], "--seed"), (["--method", "dense"], "--method"), (["--alignment-g", "0"], "--alignment-g"),
    (["--method", "exact", "--hidden", "256"], "--method: 'exact' needs .* GiB")])
def test_cli_bad_input_one_line_exit_2(argv, match, tmp_path, capsys):
    status = cli_main(["report", "--quick", "--quiet", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("kpref report: error: ")
    assert re.search(match, err) and "Traceback" not in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_cli_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    status = cli_main(["report", "--quick", "--quiet", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("kpref report: error: --out: cannot write") and len(err.splitlines()) == 1


def test_cli_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["report", "--bogus"])
    assert info.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_cli_bad_input_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kpref", "report", "--quick", "--g", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--g" in proc.stderr


@pytest.mark.slow
@pytest.mark.report
def test_report_quick_end_to_end(tmp_path):
    """``python -m kpref report --quick`` as a user runs it (BLAS single-threaded: the suite runs in parallel)."""
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "kpref", "report", "--quick", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    quick = ex.ExperimentConfig.quick()
    _check_schema(report, cells=quick.cells, gains=quick.gains, num_checkpoints=quick.num_checkpoints,
                  rules=quick.rules)
    assert all(c["method"] == "exact" for r in report["runs"] for c in r["checkpoints"])
    for run in report["runs"]:                                         # training works at the quick settings
        assert run["checkpoints"][-1]["loss"] < 0.5 * run["checkpoints"][0]["loss"]
    for name in _report.FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "erank K" in proc.stdout and "report.json" in proc.stdout
