"""``python -m kpref sweep``: summaries against kpref.analysis, the trivial loss, folders and manifests, restart
runs only what is missing, bitwise-identical records on 1 process, 2 processes and a Dask LocalCluster (with a
worker killed mid-run), protocol keywords, CLI mistakes."""

import json
import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

import kpref
from kpref import analysis
from kpref.__main__ import main as cli_main
from kpref.experiments import sweep as sw

TINY = sw.SweepConfig(cells=("elman",), gains=(0.5, 2.0), seeds=(0, 1), tasks=("memory_pro",), hidden_size=3,
                      batch_size=3, stimulus_steps=2, memory_steps=1, response_steps=2, context_steps=1, steps=4,
                      num_checkpoints=2)
#: The paper's protocol at toy size: SGD with momentum and clipping on minibatches of 3 from a pool of 7 noisy trials.
MINI = replace(TINY, pool_size=7, minibatch_size=3, optimizer="sgd", momentum=0.9, clip_grad_norm=0.5,
               learning_rate=0.05)


def _lin(B=3, T=4, H=3, seed=0):
    rng = np.random.default_rng(seed)
    cell = kpref.GRU(3, H)
    return kpref.linearize(cell, cell.init_params(rng, g=1.0), rng.standard_normal((B, T, 3)))


def _records(out):
    runs = os.path.join(out, "runs")
    return {d: open(os.path.join(runs, d, "record.json"), "rb").read() for d in sorted(os.listdir(runs))}


# ------------------------------------------------------------------ summaries
def test_exact_checkpoint_summaries_match_analysis():
    lin = _lin()
    s = sw.checkpoint_summaries(lin, replace(TINY, method="exact"), None)
    assert s["method"] == "exact"
    for op in sw.OPERATORS:
        assert s["effective_rank"][op] == pytest.approx(analysis.effective_rank(getattr(lin, op)), rel=1e-10)
    for r in sw.REDUCTIONS:
        ref = analysis.effective_dimensions(lin, reduction=r)
        for op in sw.OPERATORS:
            for a in sw.AXES:
                assert s["effective_dimensions"][r][op][a] == pytest.approx(ref[op][a], rel=1e-10)
                assert s["operator_effective_rank"][r][op][a] == analysis.operator_effective_rank(
                    getattr(lin, op), lin.shape, a, reduction=r)
    assert s["misdirection"] == pytest.approx(analysis.misdirection(lin), rel=1e-10)


def test_randomized_checkpoint_summaries_near_exact():
    lin = _lin()
    ex = sw.checkpoint_summaries(lin, replace(TINY, method="exact"), None)
    rz = sw.checkpoint_summaries(lin, replace(TINY, method="randomized", n_probes=300),
                                 np.random.default_rng(0))
    assert rz["method"] == "randomized"
    for op in sw.OPERATORS:
        # Hutch++ ratio: five of its own error estimates (plus rounding: its sketch may span the whole range)
        assert abs(rz["effective_rank"][op] - ex["effective_rank"][op]) <= (5 * rz["effective_rank_error"][op]
                                                                            + 1e-12 * ex["effective_rank"][op])
    # Hutchinson ratios with 300 probes: relative error O(1/√300) ≈ 6 % per factor; 30 % is > 4 s.e.
    for r in sw.REDUCTIONS:
        for a in sw.AXES:
            assert rz["effective_dimensions"][r]["K"][a] == pytest.approx(ex["effective_dimensions"][r]["K"][a],
                                                                           rel=0.3)
        assert rz["operator_effective_rank"][r]["K"]["time"] is None
    assert rz["misdirection"] == pytest.approx(ex["misdirection"], rel=0.3)


def test_trivial_loss_is_the_batch_mean_predictor():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((5, 4, 2))
    mask = (rng.uniform(size=(5, 4)) < 0.7).astype(float)
    value = sw.trivial_loss(target, mask)
    m = np.repeat(mask[:, :, None], 2, axis=2)
    expected = 0.0
    for t in range(4):
        for o in range(2):
            w = m[:, t, o]
            mean = (w * target[:, t, o]).sum() / w.sum() if w.sum() > 0 else 0.0
            expected += np.sum(w * (target[:, t, o] - mean) ** 2)
    assert value == pytest.approx(expected / target.size, rel=1e-13)
    # it is the minimum over constant-per-(t, o) predictors: any shift of the mean costs
    mean = (m * target).sum(0) / np.where(m.sum(0) > 0, m.sum(0), 1)
    for delta in (1e-3, -1e-3):
        shifted = np.sum(m * (target - (mean + delta)) ** 2) / target.size
        assert shifted > value
    assert sw.did_not_learn(0.5 * value, value) and not sw.did_not_learn(0.49 * value, value)


def test_every_task_runs_and_seeds_do_not_depend_on_the_grid():
    cfg = replace(TINY, tasks=sw.SWEEP_TASKS, gains=(1.0,), seeds=(3,))
    for spec in cfg.runs():
        record, losses, _ = sw.run_one(cfg.as_dict(), spec)
        assert losses.shape == (cfg.steps + 1,)
        if spec["task"] in ("memory_pro", "multitask"):
            k = record["accuracy"] * cfg.batch_size          # a fraction of the B trials
            assert 0.0 <= record["accuracy"] <= 1.0 and abs(k - round(k)) < 1e-12
        else:
            assert record["accuracy"] is None
        assert record["checkpoints"][0]["loss"] == losses[0]
        assert record["trivial_loss"] > 0
    # the same run inside a bigger grid gives the same record
    spec = {"task": "memory_pro", "cell": "elman", "g": 2.0, "seed": 1}
    a, _, _ = sw.run_one(TINY.as_dict(), spec)
    b, _, _ = sw.run_one(replace(TINY, gains=(0.1, 2.0, 3.0), seeds=(1, 5)).as_dict(), spec)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ------------------------------------------------------------------ folders, restart
def test_restart_runs_only_missing_or_incomplete_runs(tmp_path):
    out = str(tmp_path / "s")
    first = sw.run_sweep(TINY, out, figures=False)
    assert len(first["executed"]) == 4 and first["skipped"] == []
    before = _records(out)
    ids = sorted(before)
    for rid in ids:
        m = json.load(open(os.path.join(out, "runs", rid, "manifest.json")))
        assert m["spec"]["cell"] == "elman" and set(m["files"]) == {"record.json", "losses.npy"}
    again = sw.run_sweep(TINY, out, figures=False)
    assert again["executed"] == []
    os.remove(os.path.join(out, "runs", ids[0], "manifest.json"))          # killed before the manifest
    with open(os.path.join(out, "runs", ids[1], "losses.npy"), "r+b") as f:  # a damaged file
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    os.makedirs(os.path.join(out, "runs", "stray"))                       # not ours: left alone
    third = sw.run_sweep(TINY, out, figures=False)
    assert sorted(third["executed"]) == ids[:2]
    assert _records_safe(out) == before
    assert os.path.isdir(os.path.join(out, "runs", "stray"))
    # a changed setting names a different config: everything reruns
    fourth = sw.run_sweep(replace(TINY, learning_rate=2e-2), out, figures=False)
    assert len(fourth["executed"]) == 4


def _records_safe(out):
    runs = os.path.join(out, "runs")
    return {d: open(os.path.join(runs, d, "record.json"), "rb").read() for d in sorted(os.listdir(runs))
            if os.path.exists(os.path.join(runs, d, "record.json"))}


def test_table_and_figures(tmp_path):
    out = str(tmp_path / "s")
    sw.run_sweep(TINY, out)
    for name in ("table.csv", "summary.json", "sweep.json", "effective_ranks_vs_g.png",
                 "effective_dimensions_vs_g.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["num_runs"] == 4 and len(summary["rows"]) == 2
    row = summary["rows"][0]
    recs = [json.loads(v) for k, v in _records(out).items() if "g0.5_" in k]
    vals = [r["checkpoints"][-1]["effective_rank"]["K"] for r in recs]
    assert row["erank_K_last"] == pytest.approx(np.mean(vals), rel=1e-12)
    assert row["erank_K_last_std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-12)
    assert "effdim_mg_K_time_last" in row and "effdim_pt_K_time_last" in row


# ------------------------------------------------------------------ executors: bitwise identical
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["full_batch", "minibatch"])
def test_two_local_processes_give_bitwise_the_same_records(tmp_path, protocol):
    cfg = TINY if protocol == "full_batch" else MINI
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    sw.run_sweep(cfg, a, jobs=1, figures=False)
    res = sw.run_sweep(cfg, b, jobs=2, figures=False)
    assert len(res["executed"]) == 4
    assert _records(a) == _records(b)
    ma = json.load(open(os.path.join(b, "runs", sorted(os.listdir(os.path.join(b, "runs")))[0], "manifest.json")))
    assert ma["executor"] == "local:2"


@pytest.mark.slow
def test_dask_local_cluster_with_a_worker_killed_mid_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    # the minibatch protocol (SGD, momentum, clipping, pool): the full-batch path is the jobs test's
    cfg = replace(MINI, steps=120, num_checkpoints=2, hidden_size=6)
    ref = str(tmp_path / "ref")
    sw.run_sweep(cfg, ref, figures=False)
    out = str(tmp_path / "dask")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, worker_dashboard_address=None)
    killed = {}
    try:
        client = distributed.Client(cluster)
        result = {}
        th = threading.Thread(target=lambda: result.update(
            sw.run_sweep(cfg, out, scheduler=cluster.scheduler_address, figures=False)))
        th.start()
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for addr, keys in client.processing().items():
                running = [k for k in keys if str(k).startswith("kpref-run-")]
                if running:
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)                 # the worker dies mid-run
                    killed = {"addr": addr, "keys": running}
                    break
            time.sleep(0.05)
        th.join(600)
        assert killed, "no run was seen processing"
        assert not th.is_alive()
        story = cluster.scheduler.story(*killed["keys"])
        # the scheduler moved the killed run off the dead worker and ran it again
        assert any(s[1] == "processing" and s[2] in ("released", "waiting", "no-worker") for s in story)
        client.close()
    finally:
        cluster.close()
    assert sorted(result["executed"]) == sorted(_records(ref))
    assert _records(out) == _records(ref)


# ------------------------------------------------------------------ protocol, CLI
def test_train_kwargs_is_the_one_place_protocol_passes():
    kw = sw.train_kwargs(replace(TINY, protocol=(("betas", (0.8, 0.99)),)))
    assert kw == {"steps": 4, "optimizer": "adam", "learning_rate": TINY.learning_rate, "betas": (0.8, 0.99)}
    with pytest.raises(ValueError, match="'no_such_keyword'"):
        replace(TINY, protocol=(("no_such_keyword", 1),)).checked()
    with pytest.raises(ValueError, match="'steps'"):
        sw.train_kwargs(replace(TINY, protocol=(("steps", 3),)))
    r1, _, _ = sw.run_one(replace(TINY, protocol=(("betas", (0.5, 0.9)),)).as_dict(), TINY.runs()[0])
    r2, _, _ = sw.run_one(TINY.as_dict(), TINY.runs()[0])
    assert r1["checkpoints"][-1]["loss"] != r2["checkpoints"][-1]["loss"]      # the keyword reached train


@pytest.mark.parametrize("argv, match", [
    (["--g", "0"], "--g"),
    (["--g", "log:1,0.5,3"], "--g"),
    (["--cells", "gru,rnn"], "--cells[1]"),
    (["--tasks", "memory"], "--tasks[0]"),
    (["--jobs", "0"], "--jobs"),
    (["--hidden", "1.5"], "--hidden"),
    (["--scheduler", "localhost:8786"], "--scheduler"),
    (["--g-convention", "torch"], "--g-convention"),
])
def test_cli_bad_input_one_line_exit_2(argv, match, tmp_path, capsys):
    assert cli_main(["sweep", "--quick", "--out", str(tmp_path / "o")] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kpref sweep: error: ") and match in err[0]


def test_log_spaced_gains_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["sweep", "--out", str(out), "--cells", "elman", "--seeds", "0", "--hidden", "2", "--batch", "2",
            "--steps", "2", "--g", "log:0.1,10,3", "--quiet"]
    assert cli_main(argv) == 0
    cfg = json.load(open(out / "sweep.json"))["config"]
    assert cfg["gains"] == pytest.approx([0.1, 1.0, 10.0])
    assert sorted(os.listdir(out / "runs")) == sorted(f"memory_pro_elman_g{g}_s0" for g in ("0.1", "1", "10"))
    assert "did not learn" in capsys.readouterr().out


def test_ctrl_c_leaves_complete_runs_or_none(tmp_path, monkeypatch):
    out = str(tmp_path / "s")
    real = sw.run_one
    calls = []

    def interrupted(config_dict, spec):
        calls.append(spec)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config_dict, spec)

    monkeypatch.setattr(sw, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(TINY, out, figures=False)
    monkeypatch.setattr(sw, "run_one", real)
    leftovers = [f for _, _, files in os.walk(out) for f in files if "-tmp-" in f]
    assert leftovers == []
    assert len(_records_safe(out)) == 1                      # the first run, complete
    again = sw.run_sweep(TINY, out, figures=False)
    assert len(again["executed"]) == 3


def test_one_home_for_reduced_gram_summaries():
    # the sweep's PR and 95 % rank of a reduced Gram are kpref's own (issue 15), with the experiments'
    # zero convention; hand values: eigenvalues (3, 1, 0) → PR 16/10, 95 % of 4 needs both (3 < 3.8 ≤ 4)
    D = np.diag([3.0, 1.0, 0.0])
    assert analysis.gram_variance_rank(D) == 2
    assert analysis.gram_variance_rank(D, 0.75) == 1
    assert sw._pr(D) == pytest.approx(1.6, rel=1e-15)
    assert sw._pr(np.zeros((3, 3))) == 0.0 and sw._variance_rank(np.zeros((3, 3))) == 0
    with pytest.raises(ValueError, match="D:"):
        analysis.gram_variance_rank(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="D: expected a square"):
        analysis.gram_variance_rank(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="D:"):
        analysis.gram_variance_rank(np.eye(2, dtype=int))


# ------------------------------------------------------------------ the paper's protocol reaches train
def _cli_config(argv):
    import argparse

    return sw.config_from_args(sw.add_arguments(argparse.ArgumentParser()).parse_args(["--quick"] + argv))


def test_protocol_flags_reach_train_and_the_manifest(tmp_path, monkeypatch):
    cfg = _cli_config(["--optimizer", "sgd", "--momentum", "0.9", "--clip-grad-norm", "0.5", "--loss-tolerance",
                       "1e-9", "--pool-size", "7", "--batch-size", "3", "--pool-noise", "0.2"])
    assert (cfg.optimizer, cfg.momentum, cfg.clip_grad_norm, cfg.loss_tolerance, cfg.pool_size, cfg.minibatch_size,
            cfg.pool_noise_std) == ("sgd", 0.9, 0.5, 1e-9, 7, 3, 0.2)
    seen = []
    real = sw.train
    monkeypatch.setattr(sw, "train", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    cfg = replace(TINY, **{k: getattr(cfg, k) for k in ("optimizer", "momentum", "clip_grad_norm", "loss_tolerance",
                                                       "pool_size", "minibatch_size", "pool_noise_std")})
    spec = cfg.runs()[0]
    record, losses, _ = sw.run_one(cfg.as_dict(), spec)
    kw = seen[0]
    assert (kw["optimizer"], kw["momentum"], kw["clip_grad_norm"], kw["loss_tolerance"]) == ("sgd", 0.9, 0.5, 1e-9)
    # the pool: 7 trials of the pool generator with noise 0.2, distinct from the (noiseless) evaluation batch
    px, pt, pm, _ = sw.task_batch(cfg, spec["task"], spec["seed"], pool=True)
    x, target, mask, _ = sw.task_batch(cfg, spec["task"], spec["seed"])
    assert px.shape[0] == 7 and x.shape[0] == TINY.batch_size
    batch = kw["batch_fn"](np.random.default_rng(0), 0)
    assert batch[0].shape[0] == 3 and any(np.array_equal(batch[0][0], p) for p in px)
    assert record["trivial_loss"] == kpref.training.trivial_loss(target, mask)
    last = record["checkpoints"][-1]
    assert last["loss"] != last["eval_loss"] and record["final_eval_loss"] == last["eval_loss"]
    sw.write_run(str(tmp_path), cfg, spec, record, losses, 0.0, "test")
    manifest = json.load(open(os.path.join(tmp_path, "runs", sw.run_id(spec), "manifest.json")))
    for k in ("optimizer", "momentum", "clip_grad_norm", "loss_tolerance", "pool_size", "minibatch_size",
              "pool_noise_std"):
        assert manifest["settings"][k] == getattr(cfg, k)
    # each setting changes the numbers (it reached train), and changes the settings hash
    base = replace(TINY, optimizer="sgd")
    ref, _, _ = sw.run_one(base.as_dict(), spec)
    for change in ({"momentum": 0.9}, {"clip_grad_norm": 1e-3}, {"pool_size": 7, "minibatch_size": 3},
                   {"pool_size": 7, "minibatch_size": 3, "pool_noise_std": 0.0}):
        other = replace(base, **change)
        assert other.settings_hash() != base.settings_hash()
        rec, _, _ = sw.run_one(other.as_dict(), spec)
        assert rec["final_loss"] != ref["final_loss"], change


def test_checkpoints_flag_sets_the_number_of_summaries(tmp_path):
    out = tmp_path / "o"
    assert cli_main(["sweep", "--quick", "--cells", "elman", "--g", "1", "--seeds", "0", "--steps", "4",
                     "--checkpoints", "3", "--quiet", "--out", str(out)]) == 0
    (folder,) = (out / "runs").iterdir()
    record = json.loads((folder / "record.json").read_text())
    steps = [c["step"] for c in record["checkpoints"]]
    assert len(steps) == 3 and steps[0] == 0 and steps[-1] == 4 and steps == sorted(set(steps))


def test_loss_tolerance_stops_a_sweep_run():
    spec = TINY.runs()[0]
    ref, losses, _ = sw.run_one(TINY.as_dict(), spec)
    tol = float(losses[2])               # reached after 2 of the 4 steps (Adam decreases this tiny loss)
    assert all(losses[k] > tol for k in range(2)), "the reference run must first reach this loss at step 2"
    rec, short, _ = sw.run_one(replace(TINY, loss_tolerance=tol).as_dict(), spec)
    assert rec["stop_reason"] == "loss_tolerance" and rec["steps_run"] == 2 and len(short) == 3
    assert ref["stop_reason"] == "steps" and ref["steps_run"] == 4
    assert rec["checkpoints"][-1]["step"] == 2


@pytest.mark.parametrize("argv, match", [
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--momentum", "0.5"], "--momentum"),                              # Adam has no momentum
    (["--optimizer", "sgd", "--momentum", "1"], "--momentum"),
    (["--optimizer", "sgd", "--momentum", "-0.1"], "--momentum"),
    (["--clip-grad-norm", "0"], "--clip-grad-norm"),
    (["--loss-tolerance", "nan"], "--loss-tolerance"),
    (["--pool-size", "10"], "--pool-size"),                             # needs --batch-size
    (["--pool-size", "10", "--batch-size", "11"], "--batch-size"),
    (["--pool-size", "0", "--batch-size", "1"], "--pool-size"),
    (["--pool-size", "10", "--batch-size", "x"], "--batch-size"),
    (["--pool-size", "10", "--batch-size", "3", "--pool-noise", "-1"], "--pool-noise"),
    (["--checkpoints", "1"], "--checkpoints"),                          # first and last at least
    (["--steps", "4", "--checkpoints", "6"], "--checkpoints"),          # at most steps + 1
    (["--checkpoints", "two"], "--checkpoints"),
])
def test_protocol_flags_refuse_bad_values(argv, match, tmp_path, capsys):
    assert cli_main(["sweep", "--quick", "--out", str(tmp_path / "o")] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kpref sweep: error: {match}:"), err
