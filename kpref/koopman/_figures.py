"""Figures of replicate spectra: eigenvalues in the complex plane, within- vs between-system distances.

matplotlib is imported when a figure is drawn (Agg backend, no display
needed); the files are written atomically (a temporary file in the same
folder, then ``os.replace``), so an interrupted run leaves the old file or the
new one, never half of one.
"""

from __future__ import annotations

import os

import numpy as np

from .._atomic import atomic_write
from .._checks import check_real
from ._replicates import WithinBetween, as_replicate_spectra

__all__ = ["plot_replicate_spectra", "plot_within_between"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """The figure, written atomically (:func:`kpref._atomic.atomic_write`) in the format its suffix names."""
    suffix = os.path.splitext(os.fspath(path))[1] or ".png"
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=110, bbox_inches="tight", format=suffix[1:]))


def _check_out(path, title):
    """``path`` as a str whose folder exists (checked before drawing); ``title`` None or a str."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path: expected a file in an existing folder, got {path!r} (no folder {folder!r})")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title: expected None or a string, got {type(title).__name__}")
    return path


def _check_zoom(zoom):
    if zoom is None:
        return None
    try:
        vals = tuple(zoom)
    except TypeError:
        raise TypeError(f"zoom: expected None or (re_min, re_max, im_min, im_max), got {zoom!r}") from None
    if len(vals) != 4:
        raise ValueError(f"zoom: expected 4 limits (re_min, re_max, im_min, im_max), got {len(vals)}")
    vals = tuple(check_real(f"zoom[{i}]", v) for i, v in enumerate(vals))
    if not (vals[0] < vals[1] and vals[2] < vals[3]):
        raise ValueError(f"zoom: expected re_min < re_max and im_min < im_max, got {vals}")
    return vals


def _check_systems(systems):
    if not isinstance(systems, dict) or not systems:
        raise TypeError(f"systems: expected a non-empty dict name → replicate spectra, got {type(systems).__name__}")
    return {str(k): as_replicate_spectra(f"systems[{k!r}]", v) for k, v in systems.items()}


def plot_replicate_spectra(systems, path, *, zoom=None, title=None):
    """Eigenvalues of every replicate in the complex plane, with the unit circle, one panel per system.

    Parameters
    ----------
    systems : dict str → (n, k) array or sequence of 1-D arrays
        Replicate spectra per system; each replicate gets its own colour.
    path : str or os.PathLike
        Output image (written atomically).
    zoom : (re_min, re_max, im_min, im_max), optional
        Axis limits (training spectra crowd near 1: zoom there); default the
        whole unit disc.
    title : str, optional

    Returns
    -------
    str
        ``path``.
    """
    rows = _check_systems(systems)
    path = _check_out(path, title)
    zoom = _check_zoom(zoom)
    plt = _pyplot()
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 721))
    cmap = plt.get_cmap("viridis")
    for ax, (name, spectra) in zip(axes[0], rows.items()):
        ax.plot(circle.real, circle.imag, color="0.6", lw=0.8, label="|λ| = 1")
        for r, s in enumerate(spectra):
            ax.scatter(s.real, s.imag, s=10, color=cmap(r / max(len(spectra) - 1, 1)), alpha=0.8, lw=0)
        ax.set_title(f"{name} ({len(spectra)} replicates)", fontsize=9)
        ax.set_xlabel("Re λ")
        ax.set_aspect("equal" if zoom is None else "auto")
        if zoom is None:
            ax.set_xlim(-1.1, 1.1)
            ax.set_ylim(-1.1, 1.1)
        else:
            ax.set_xlim(zoom[0], zoom[1])
            ax.set_ylim(zoom[2], zoom[3])
    axes[0][0].set_ylabel("Im λ")
    if title:
        fig.suptitle(title, fontsize=10, y=1.04)
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return os.fspath(path)


def plot_within_between(pairs, path, *, title=None):
    """Histograms of within-system (seed-to-seed) and between-system distances, one panel per pair.

    Parameters
    ----------
    pairs : dict str → WithinBetween or SystemComparison
        E.g. ``{"h5 vs h40": kk.within_between(a, b)}``; a
        :class:`SystemComparison` also draws its margin and its decision.
    path : str or os.PathLike
    title : str, optional

    Returns
    -------
    str
        ``path``.
    """
    if not isinstance(pairs, dict) or not pairs:
        raise TypeError(f"pairs: expected a non-empty dict name → WithinBetween, got {type(pairs).__name__}")
    for name, item in pairs.items():     # every panel checked before drawing
        wb = item if isinstance(item, WithinBetween) else getattr(item, "distances", None)
        if not isinstance(wb, WithinBetween):
            raise TypeError(f"pairs[{name!r}]: expected a WithinBetween or SystemComparison, got {type(item).__name__}")
    path = _check_out(path, title)
    plt = _pyplot()
    n = len(pairs)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.0), squeeze=False)
    for ax, (name, item) in zip(axes[0], pairs.items()):
        wb = item if isinstance(item, WithinBetween) else getattr(item, "distances", None)
        if not isinstance(wb, WithinBetween):
            raise TypeError(f"pairs[{name!r}]: expected a WithinBetween or SystemComparison, got {type(item).__name__}")
        within = np.concatenate([wb.within_a, wb.within_b])
        bins = np.linspace(0.0, max(within.max(), wb.between.max()) * 1.05, 30)
        ax.hist(within, bins=bins, density=True, alpha=0.6, label=f"within ({within.size})")
        ax.hist(wb.between, bins=bins, density=True, alpha=0.6, label=f"between ({wb.between.size})")
        label = name
        if item is not wb:
            ax.axvline(item.margin, color="k", ls="--", lw=0.8, label=f"margin {item.margin:.3g}")
            label += f"\n{item.decision} ({item.rule}, p = {item.p_value:.3g})"
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("spectral distance")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1.1)  # above the two-line panel titles
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return os.fspath(path)
