"""Objects kpref.koopman returns own their data (issue 14): changing the caller's arrays afterwards changes nothing.

Each case calls a public kpref.koopman function on arrays the test owns, takes a deep snapshot of every array
in the result (fields of result records, items of lists and dicts), then overwrites the caller's arrays in place
(NaN, so an alias could not go unnoticed even where a value happened to repeat) and checks that the result is
bit for bit the snapshot. ``test_the_check_catches_an_alias`` proves the check fails on a result that aliases.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kpref import koopman


def _arrays(obj, path="result", seen=None):
    """Every ndarray reachable from ``obj`` (tuples, lists, dicts, dataclasses, NamedTuples), with its path."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield path, obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _arrays(getattr(obj, f.name), f"{path}.{f.name}", seen)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        for name in obj._fields:
            yield from _arrays(getattr(obj, name), f"{path}.{name}", seen)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _arrays(item, f"{path}[{i}]", seen)
    elif isinstance(obj, dict):
        for k, item in obj.items():
            yield from _arrays(item, f"{path}[{k!r}]", seen)


def _check_owns(call, inputs):
    """``call(*inputs)``, then poison every input array in place: the result must not change."""
    result = call(*inputs)
    snapshot = [(p, a.copy()) for p, a in _arrays(result)]
    assert snapshot, "the result holds no array: nothing to check"
    for a in inputs:
        for _, arr in _arrays(a, "input"):
            if arr.flags.writeable:
                arr[...] = np.nan
    for (path, before), (_, now) in zip(snapshot, _arrays(result)):
        assert np.array_equal(before, now, equal_nan=True), f"{path} changed with the caller's array (aliasing)"
    return result


def _trajs(seed=0, n=3, T=12, D=2):
    return np.random.default_rng(seed).standard_normal((n, T, D))


def _spectra(shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([[0.9, 0.5], [0.88, 0.52], [0.91, 0.49]]) + shift + 1e-3 * rng.standard_normal((3, 2))


CASES = {
    "delay_embed (array)": (lambda t: koopman.delay_embed(t, 0), lambda: [_trajs()]),
    "delay_embed (list)": (lambda t: koopman.delay_embed(t, 0), lambda: [list(_trajs())]),
    "snapshot_pairs": (koopman.snapshot_pairs, lambda: [_trajs()]),
    "dmd": (lambda t: koopman.dmd(t, rank=2, center=True), lambda: [_trajs()]),
    "dmd_from_pairs": (lambda X, Y: koopman.dmd_from_pairs(X, Y, rank=2),
                       lambda: [_trajs()[0].T[:, :-1].copy(), _trajs()[0].T[:, 1:].copy()]),
    "koopman_spectrum": (lambda t: koopman.koopman_spectrum(t, 1), lambda: [_trajs()]),
    "replicate_spectra": (lambda t: koopman.replicate_spectra(t, 1, rank=2), lambda: [_trajs(n=4)]),
    "conjugacy_test": (lambda a, b: koopman.conjugacy_test(a, b, n_delays=1, rank=2, n_resamples=3, rng=0),
                       lambda: [_trajs(0), _trajs(1)]),
    "distance_matrix": (lambda a, b: koopman.distance_matrix(a, b), lambda: [_spectra(), _spectra(0.01, 1)]),
    "within_between": (koopman.within_between, lambda: [_spectra(), _spectra(0.01, 1)]),
    "compare_systems": (lambda a, b: koopman.compare_systems(a, b, n_permutations=9, n_bootstrap=9, rng=0),
                        lambda: [_spectra(), _spectra(0.01, 1)]),
    "shifted_spectrum (delta=0)": (lambda e: koopman.shifted_spectrum(e, 0.0),
                                   lambda: [np.array([0.9, 0.5 + 0.1j, 0.5 - 0.1j])]),
    "linear_replicate_spectra": (lambda e: koopman.linear_replicate_spectra(e, 2, 0.01, T=8, rng=0),
                                 lambda: [np.array([0.9, 0.5])]),
    "trajectories_from_checkpoints (all)": (koopman.trajectories_from_checkpoints,
                                            lambda: [np.random.default_rng(2).standard_normal((2, 6, 5))]),
    "trajectories_from_checkpoints (list)": (koopman.trajectories_from_checkpoints,
                                             lambda: [list(np.random.default_rng(2).standard_normal((2, 6, 5)))]),
    "trajectories_from_checkpoints (pca)": (lambda w: koopman.trajectories_from_checkpoints(w, 2),
                                            lambda: [np.random.default_rng(2).standard_normal((2, 6, 5))]),
    "select_rank + SubsetEigenvalues": (lambda t: koopman.SubsetEigenvalues(t)(np.array([0, 1]), 2),
                                        lambda: [_trajs()]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_koopman_results_own_their_data(name):
    call, make = CASES[name]
    _check_owns(call, make())


def test_subset_eigenvalues_engine_owns_its_factors():
    """The engine keeps factors of the trajectories: a later change of the caller's array must not reach them."""
    t = _trajs(n=4)
    engine = koopman.SubsetEigenvalues(t)
    before = engine(np.array([0, 1, 2]), 2)
    t[...] = np.nan
    assert np.array_equal(engine(np.array([0, 1, 2]), 2), before)


def test_the_check_catches_an_alias():
    """A result that keeps the caller's array fails the check (the test can fail)."""
    with pytest.raises(AssertionError, match="aliasing"):
        _check_owns(lambda a: {"kept": a}, [np.ones(3)])
