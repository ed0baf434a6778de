r"""Task generators: memory-pro (and its anti / delay variants), flip-flop, multitask.

Every generator takes ``batch_size`` and ``rng`` (``None``, an integer seed or
a ``numpy.random.Generator``), returns float64 arrays ``x`` of shape
``(B, T, N)`` and ``target`` of shape ``(B, T, O)`` (and a 0/1 ``mask`` where
the task needs one), and is bitwise deterministic for a given seed: the draws
are made in a fixed, documented order from that one generator.

Notes
-----
**Memory-pro family** (Yang et al. 2019; Driscoll et al. 2024; the task of the
KPFlow papers). One trial is four consecutive periods, in steps::

    | fixation | stimulus | memory (delay) | response |
      F steps    S steps    D steps          R steps         T = F + S + D_max + R

Inputs ``x[b, t] = [fix, cos θ, sin θ]``:

* ``fix = 1`` during fixation, stimulus and memory, ``0`` during the response
  (the go cue is the fixation input switching off);
* the stimulus ``(cos θ, sin θ)``, ``θ ~ U[0, 2π)``, is on during the stimulus
  period only (*memory* variants: it must be remembered across the delay);
  in the *delay* variants it stays on until the end of the trial;
* optional input noise: ``noise_std · ξ``, ``ξ`` i.i.d. standard normal, added
  to all three channels at every step.

Targets ``target[b, t] = [fix_out, cos θ_out, sin θ_out]``:

* ``fix_out = 1`` before the response period, ``0`` during it;
* ``(cos θ_out, sin θ_out) = 0`` before the response period and the
  response direction during it: ``θ_out = θ`` (pro) or ``θ + π`` (anti).

Mask ``(B, T)`` of 0/1 floats: 1 everywhere except the first ``grace_steps``
steps of the response period (0 there: the output may move freely right
after the go cue, as in Yang et al. 2019).

With ``memory_steps = (low, high)`` the delay of each trial is drawn
uniformly from the integers ``low … high``; every trial has the same
``T = F + S + high + R`` and the response period runs from the end of the
trial's delay to ``T`` (so it lasts ``R + high − D_b`` steps).

Draw order (fixed): angles ``θ`` (B uniforms), then the delays (B integers,
only if a range is given), then the noise (one ``(B, T, N)`` normal block,
only if ``noise_std > 0``). ``multitask`` first draws the permutation that
assigns rules to trials, then follows the same order.

**Flip-flop** (Sussillo & Barak 2013). ``n_bits`` independent channels; at
each step and for each bit, with probability ``p_flip`` a pulse of ±1 (signs
equally likely) arrives on that bit's input. The target of a bit is the sign
of its most recent pulse (0 before its first pulse). With ``mix_anti`` (the
KPFlow package's variant) one more input channel holds a per-trial sign
``a_b = ±1`` (equally likely) at every step and every target is multiplied by
it (``a_b = −1``: the anti task, remember the opposite sign). Draw order: the
pulse events (one ``(B, T, n_bits)`` uniform block), the signs (one ``(B, T,
n_bits)`` uniform block), the anti signs (``B`` uniforms, only with
``mix_anti``), then the noise if ``noise_std > 0`` (on every input channel).
No mask.

**Low-rank forecast** (the KPFlow package's simplicity-bias task): a latent
``u_t ∈ R^L`` rotates slowly, ``u_{t+1} = 0.8 u_t + 0.2 A u_t`` (``A``
orthogonal, ``u_0 ~ N(0, I)``), and is embedded as ``v_t = C u_t ∈ R^D``; the
network reads ``x_t = sin(W_in v_t + b_in)`` (``N_in`` channels) and must
output the next step through another affine map and sine,
``target_t = sin(W_out v_{t+1} + b_out)``, ``t = 0 … T−1``. The maps
``A, C, W_in, b_in, W_out, b_out`` (entries N(0, 1), ``A`` from the QR of a
normal matrix) are the *task* and are drawn from ``task_rng`` (default seed
0, so every batch shares them); the trials draw ``u_0`` (``(B, L)``
normals) and then, if ``noise_std > 0``, the embedding noise added to every
``v_t`` (``(B, T + 1, D)`` normals) from ``rng``.

**KPFlow package layout** (:data:`KPFLOW_MEMORY_PRO`): no fixation-only
period (``fixation_steps=0``), 30 stimulus, 30 memory and 30 response steps
(``T = 90``), no grace steps, input noise ``0.1·√2``; ``amplitude`` scales the
stimulus inputs and the response targets (the package's ``amplitude``), and
``angles='even'`` gives the evenly spaced test angles ``θ_b = 2π b / B``
(drawing nothing). :func:`memory_pro_accuracy` is the package's accuracy: a
trial is correct when, at its last step, both response outputs are within
``π/10`` of their targets.

**Multitask**: trials of several memory-pro rules mixed in one batch, the rule
given to the network as a one-hot input held on for the whole trial:
``x[b, t] = [fix, cos θ, sin θ, onehot(rule_b)]`` (noise is not added to the
rule inputs). Rules are assigned so that each appears ``⌊B/R⌋`` or
``⌈B/R⌉`` times (``arange(B) % R``, permuted by the generator), and the
returned ``rule`` array (B,) of integer indices into ``rules`` lets the
caller split the error signal per sub-task.

With ``context_steps = C > 0`` (the KPFlow package's multitask) the rule is
cued only during a context period of ``C`` steps before the trial: during it
the fixation input and target are 1, the stimulus channels 0 and the one-hot
rule input on; afterwards the rule inputs are 0 and the trial runs as above
(``T = C + F + S + D_max + R``; the mask is 1 on the context period). Noise,
if any, is then added to every input channel, rule inputs included, as in the
package.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._checks import (as_generator, as_real_array, check_bool, check_choice, check_positive_float, check_positive_int,
                      check_size_memory)

__all__ = [
    "MemoryProTrials",
    "FlipFlopTrials",
    "MultitaskTrials",
    "MEMORY_RULES",
    "TASK_NAMES",
    "LowRankForecastTrials",
    "KPFLOW_MEMORY_PRO",
    "memory_pro",
    "memory_pro_accuracy",
    "flip_flop",
    "multitask",
    "low_rank_forecast",
    "generate",
]

#: Rule name → (anti, delay) flags of the memory-pro family.
MEMORY_RULES = {
    "memory_pro": (False, False),
    "memory_anti": (True, False),
    "delay_pro": (False, True),
    "delay_anti": (True, True),
}

#: Every name :func:`generate` accepts.
TASK_NAMES = tuple(MEMORY_RULES) + ("flip_flop", "multitask", "low_rank_forecast")

#: The KPFlow package's memory-pro layout (pass as ``**KPFLOW_MEMORY_PRO``): T = 0 + 30 + 30 + 30 = 90.
KPFLOW_MEMORY_PRO = dict(fixation_steps=0, stimulus_steps=30, memory_steps=30, response_steps=30, grace_steps=0,
                         noise_std=0.1 * np.sqrt(2.0))


class MemoryProTrials(NamedTuple):
    """``(x, target, mask)`` of a memory-pro batch: (B, T, 3), (B, T, 3), (B, T)."""

    x: np.ndarray
    target: np.ndarray
    mask: np.ndarray


class FlipFlopTrials(NamedTuple):
    """``(x, target)`` of a flip-flop batch: (B, T, n_bits) each."""

    x: np.ndarray
    target: np.ndarray


class LowRankForecastTrials(NamedTuple):
    """``(x, target)``: (B, T, N_in) and (B, T, N_out)."""

    x: np.ndarray
    target: np.ndarray


class MultitaskTrials(NamedTuple):
    """``(x, target, mask, rule)``: (B, T, 3 + R), (B, T, 3), (B, T) and (B,) rule indices."""

    x: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    rule: np.ndarray


def _check_nonneg_float(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number >= 0, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or value < 0.0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value}")
    return value


def _check_probability(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a probability in (0, 1], got {value!r} ({type(value).__name__})")
    value = float(value)
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{name}: expected a probability in (0, 1], got {value}")
    return value


def _check_memory_steps(value):
    """``memory_steps``: an int >= 0 or a pair ``(low, high)`` with 0 <= low <= high."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"memory_steps: expected an integer or a pair (low, high), got {value!r}")
        low = check_positive_int("memory_steps[0]", value[0], minimum=0)
        high = check_positive_int("memory_steps[1]", value[1], minimum=0)
        if high < low:
            raise ValueError(f"memory_steps: expected low <= high, got ({low}, {high})")
        return low, high
    steps = check_positive_int("memory_steps", value, minimum=0)
    return steps, steps


def _check_trial_memory(batch_size, T, width, steps_text):
    """The (B, T, width) arrays of a batch (inputs, targets, mask, noise: ≤ 4 such) must fit the default limit."""
    check_size_memory(f"batch_size={batch_size}, {steps_text}", 4 * 8 * batch_size * T * max(width, 3),
                      what=f"a batch of {batch_size} trials of {T} steps")


def _memory_family(batch_size, rng, anti, delay, *, fixation_steps, stimulus_steps, memory_steps,
                   response_steps, grace_steps, noise_std, amplitude=1.0, angles=None, rule_inputs=0, rule=None,
                   context_steps=0):
    """Shared generator: per-trial ``anti``/``delay`` flags (B,) bool; checked scalars."""
    B = batch_size
    C = context_steps
    F, S, R = fixation_steps, stimulus_steps, response_steps
    low, high = memory_steps
    T = C + F + S + high + R
    _check_trial_memory(B, T, 3 + rule_inputs, "context_steps + fixation_steps + stimulus_steps + memory_steps + "
                        f"response_steps = {T}")
    if angles is None:
        angle = rng.uniform(0.0, 2.0 * np.pi, size=B)
    elif isinstance(angles, str):                      # 'even' (checked by the caller)
        angle = 2.0 * np.pi * np.arange(B) / B
    else:
        angle = angles
    if high > low:
        delay_len = rng.integers(low, high, size=B, endpoint=True)
    else:
        delay_len = np.full(B, high, dtype=np.int64)
    N = 3 + rule_inputs
    x = np.zeros((B, T, N))
    target = np.zeros((B, T, 3))
    mask = np.ones((B, T))
    out_angle = angle + np.where(anti, np.pi, 0.0)
    for b in range(B):
        go = C + F + S + int(delay_len[b])          # first step of the response period
        x[b, :go, 0] = 1.0
        stim_end = T if delay[b] else C + F + S
        x[b, C + F:stim_end, 1] = amplitude * np.cos(angle[b])
        x[b, C + F:stim_end, 2] = amplitude * np.sin(angle[b])
        target[b, :go, 0] = 1.0
        target[b, go:, 1] = amplitude * np.cos(out_angle[b])
        target[b, go:, 2] = amplitude * np.sin(out_angle[b])
        mask[b, go:go + grace_steps] = 0.0
        if rule is not None:
            x[b, : (C if C > 0 else T), 3 + int(rule[b])] = 1.0
    if noise_std > 0.0:
        noise = rng.standard_normal((B, T, N))
        if C > 0:
            x += noise_std * noise
        else:
            x[:, :, :3] += noise_std * noise[:, :, :3]
    return x, target, mask


def _check_memory_kwargs(fixation_steps, stimulus_steps, memory_steps, response_steps, grace_steps, noise_std):
    kw = dict(
        fixation_steps=check_positive_int("fixation_steps", fixation_steps, minimum=0),
        stimulus_steps=check_positive_int("stimulus_steps", stimulus_steps),
        memory_steps=_check_memory_steps(memory_steps),
        response_steps=check_positive_int("response_steps", response_steps),
        grace_steps=check_positive_int("grace_steps", grace_steps, minimum=0),
        noise_std=_check_nonneg_float("noise_std", noise_std),
    )
    if kw["grace_steps"] >= kw["response_steps"]:
        raise ValueError(
            f"grace_steps: expected fewer than response_steps={kw['response_steps']} steps, "
            f"got {kw['grace_steps']}"
        )
    return kw


def _check_angles(angles, B):
    if angles is None:
        return None
    if isinstance(angles, str):
        check_choice("angles", angles, ("even",))
        return angles
    return as_real_array("angles", angles, (B,), ("B",)).copy()


def memory_pro(batch_size, rng=None, *, anti=False, delay=False, fixation_steps=10, stimulus_steps=20,
               memory_steps=30, response_steps=30, grace_steps=5, noise_std=0.0, amplitude=1.0, angles=None):
    """A batch of memory-pro trials (or its anti / delay variants).

    Parameters
    ----------
    batch_size : int
        ``B``.
    rng : None, int or numpy.random.Generator
    anti : bool
        Respond opposite to the stimulus (``θ_out = θ + π``): memory-anti.
    delay : bool
        Keep the stimulus on until the end of the trial (delay-pro /
        delay-anti) instead of switching it off after the stimulus period.
    fixation_steps, stimulus_steps, response_steps : int
        Lengths, in steps, of the fixation, stimulus and response periods.
    memory_steps : int or (int, int)
        Length of the memory (delay) period, or a range ``(low, high)`` from
        which each trial's length is drawn uniformly (endpoints included).
    grace_steps : int
        Steps at the start of the response period excluded by the mask.
    noise_std : float
        Standard deviation of the Gaussian noise added to the inputs.
    amplitude : float
        Scale of the stimulus inputs and response targets (default 1).
    angles : None, 'even' or (B,) array
        Stimulus angles: drawn ``U[0, 2π)`` (default), evenly spaced
        ``2π b / B`` (the package's test batch), or given.

    Returns
    -------
    MemoryProTrials
        ``(x, target, mask)`` of shapes (B, T, 3), (B, T, 3), (B, T) with
        ``T = fixation + stimulus + max memory + response`` steps.

    Notes
    -----
    The timing, the inputs, the targets and the mask are defined in the
    module docstring of :mod:`kpref.tasks._tasks`. The defaults give ``T = 90``,
    the trial length of the KPFlow paper; ``**KPFLOW_MEMORY_PRO`` gives the
    package's layout (no fixation-only period, 30/30/30, noise 0.1·√2).
    """
    batch_size = check_positive_int("batch_size", batch_size)
    rng = as_generator(rng)
    anti = check_bool("anti", anti)
    delay = check_bool("delay", delay)
    kw = _check_memory_kwargs(fixation_steps, stimulus_steps, memory_steps, response_steps, grace_steps,
                              noise_std)
    kw["amplitude"] = check_positive_float("amplitude", amplitude)
    kw["angles"] = _check_angles(angles, batch_size)
    T = kw["fixation_steps"] + kw["stimulus_steps"] + kw["memory_steps"][1] + kw["response_steps"]
    _check_trial_memory(batch_size, T, 3, f"fixation_steps + stimulus_steps + memory_steps + response_steps = {T}")
    x, target, mask = _memory_family(batch_size, rng, np.full(batch_size, anti), np.full(batch_size, delay), **kw)
    return MemoryProTrials(x, target, mask)


def memory_pro_accuracy(y, target, *, tolerance=np.pi / 10):
    """The KPFlow package's memory-pro accuracy: the fraction of trials whose last-step response outputs
    ``y[b, -1, 1:3]`` are both within ``tolerance`` (default π/10) of ``target[b, -1, 1:3]``.

    ``y`` and ``target`` are (B, T, 3) (the readout of a memory-pro batch and its target).
    """
    y = as_real_array("y", y, (None, None, 3), ("B", "T", "O"))
    target = as_real_array("target", target, y.shape, ("B", "T", "O"))
    tolerance = check_positive_float("tolerance", tolerance)
    ok = np.all(np.abs(y[:, -1, 1:3] - target[:, -1, 1:3]) < tolerance, axis=1)
    return float(np.mean(ok))


def flip_flop(batch_size, rng=None, *, n_bits=3, num_steps=50, p_flip=0.05, noise_std=0.0, mix_anti=False):
    """A batch of ``n_bits``-bit flip-flop trials (Sussillo & Barak 2013).

    Parameters
    ----------
    batch_size : int
    rng : None, int or numpy.random.Generator
    n_bits : int
        Number of independent bits (input and output channels).
    num_steps : int
        ``T``.
    p_flip : float in (0, 1]
        Probability of a pulse on a bit at a step.
    noise_std : float
        Standard deviation of Gaussian input noise.
    mix_anti : bool
        The KPFlow package's variant: one more input channel holds a
        per-trial sign ``a_b = ±1`` and the targets are multiplied by it.

    Returns
    -------
    FlipFlopTrials
        ``(x, target)``: ``x`` (B, T, n_bits) holds the ±1 pulses (plus the
        anti channel with ``mix_anti``: (B, T, n_bits + 1)), ``target``
        (B, T, n_bits) the sign of each bit's most recent pulse (0 before the
        first one), times ``a_b`` with ``mix_anti``.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    rng = as_generator(rng)
    n_bits = check_positive_int("n_bits", n_bits)
    T = check_positive_int("num_steps", num_steps)
    p_flip = _check_probability("p_flip", p_flip)
    noise_std = _check_nonneg_float("noise_std", noise_std)
    mix_anti = check_bool("mix_anti", mix_anti)
    _check_trial_memory(batch_size, T, n_bits, f"num_steps={T}, n_bits={n_bits}")
    events = rng.uniform(size=(batch_size, T, n_bits)) < p_flip
    signs = np.where(rng.uniform(size=(batch_size, T, n_bits)) < 0.5, -1.0, 1.0)
    pulses = np.where(events, signs, 0.0)
    target = np.zeros((batch_size, T, n_bits))
    state = np.zeros((batch_size, n_bits))
    for t in range(T):
        state = np.where(events[:, t], pulses[:, t], state)
        target[:, t] = state
    x = pulses.copy()
    if mix_anti:
        anti = np.where(rng.uniform(size=batch_size) < 0.5, -1.0, 1.0)
        target *= anti[:, None, None]
        x = np.concatenate([x, np.broadcast_to(anti[:, None, None], (batch_size, T, 1))], axis=2)
    if noise_std > 0.0:
        x += noise_std * rng.standard_normal(x.shape)
    return FlipFlopTrials(x, target)


def _check_rules(rules):
    if isinstance(rules, str) or not isinstance(rules, (tuple, list)):
        raise TypeError(f"rules: expected a tuple of rule names from {tuple(MEMORY_RULES)}, got {rules!r}")
    if len(rules) == 0:
        raise ValueError("rules: expected at least one rule name, got an empty sequence")
    for i, r in enumerate(rules):
        check_choice(f"rules[{i}]", r, tuple(MEMORY_RULES))
    if len(set(rules)) != len(rules):
        raise ValueError(f"rules: expected distinct rule names, got {tuple(rules)!r}")
    return tuple(rules)


def multitask(batch_size, rng=None, *, rules=("memory_pro", "memory_anti", "delay_pro", "delay_anti"),
              fixation_steps=10, stimulus_steps=20, memory_steps=30, response_steps=30, grace_steps=5,
              noise_std=0.0, context_steps=0, amplitude=1.0):
    """A batch mixing memory-pro rules, with a one-hot rule input (held on, or cued in a context period).

    Parameters
    ----------
    batch_size : int
    rng : None, int or numpy.random.Generator
    rules : tuple of str
        Distinct names from ``memory_pro``, ``memory_anti``, ``delay_pro``,
        ``delay_anti``; rule ``r`` is input channel ``3 + r``.
    fixation_steps, stimulus_steps, memory_steps, response_steps, grace_steps, noise_std, amplitude
        As in :func:`memory_pro`, shared by every rule.
    context_steps : int
        ``0`` (default): the rule input is on for the whole trial. ``C > 0``:
        the KPFlow package's multitask — the rule is cued only during ``C``
        context steps before the trial (module notes; the package uses 30).

    Returns
    -------
    MultitaskTrials
        ``(x, target, mask, rule)``: (B, T, 3 + R), (B, T, 3), (B, T) and the
        (B,) int64 index into ``rules`` of each trial.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    rng = as_generator(rng)
    rules = _check_rules(rules)
    kw = _check_memory_kwargs(fixation_steps, stimulus_steps, memory_steps, response_steps, grace_steps,
                              noise_std)
    kw["context_steps"] = check_positive_int("context_steps", context_steps, minimum=0)
    kw["amplitude"] = check_positive_float("amplitude", amplitude)
    R = len(rules)
    T = kw["fixation_steps"] + kw["stimulus_steps"] + kw["memory_steps"][1] + kw["response_steps"]
    _check_trial_memory(batch_size, T, 3 + R, f"fixation_steps + stimulus_steps + memory_steps + response_steps "
                        f"= {T}")
    rule = rng.permutation(np.arange(batch_size, dtype=np.int64) % R)
    flags = np.array([MEMORY_RULES[r] for r in rules], dtype=bool)  # (R, 2): anti, delay
    x, target, mask = _memory_family(batch_size, rng, flags[rule, 0], flags[rule, 1], rule_inputs=R,
                                     rule=rule, **kw)
    return MultitaskTrials(x, target, mask, rule)


def low_rank_forecast(batch_size, rng=None, *, num_steps=30, dim=100, latent_dim=10, input_dim=100,
                      target_dim=100, noise_std=0.0, task_rng=0):
    """A batch of the low-rank forecasting task (module notes): ``sin`` of affine maps of a rotating latent.

    Parameters
    ----------
    batch_size : int
    rng : None, int or numpy.random.Generator
        The trials: initial latents, then the embedding noise.
    num_steps : int
        ``T``.
    dim, latent_dim, input_dim, target_dim : int
        ``D``, ``L`` (``L <= D``), ``N_in``, ``N_out`` (package defaults 100, 10, 100, 100).
    noise_std : float
        Standard deviation of the noise added to the embedding ``v_t`` (the package: 0.01).
    task_rng : None, int or numpy.random.Generator
        The maps; draw order ``A`` (L × L normals, then QR, signs fixed by
        ``diag(R) > 0``), ``C`` (D × L), ``W_in`` (N_in × D), ``b_in``,
        ``W_out`` (N_out × D), ``b_out``.

    Returns
    -------
    LowRankForecastTrials
        ``x`` (B, T, N_in), ``target`` (B, T, N_out).
    """
    B = check_positive_int("batch_size", batch_size)
    rng = as_generator(rng)
    task_rng = as_generator(task_rng, "task_rng")
    T = check_positive_int("num_steps", num_steps)
    D = check_positive_int("dim", dim)
    L = check_positive_int("latent_dim", latent_dim)
    if L > D:
        raise ValueError(f"latent_dim: expected at most dim={D}, got {L}")
    n_in = check_positive_int("input_dim", input_dim)
    n_out = check_positive_int("target_dim", target_dim)
    noise_std = _check_nonneg_float("noise_std", noise_std)
    # floats held at once: the task's matrices, u and v (and v's noise), x and target with their pre-activations
    n_floats = L * L + D * L + (n_in + n_out) * (D + 1) + B * (T + 1) * (L + 2 * D) + 2 * B * T * (n_in + n_out)
    check_size_memory(f"batch_size={B}, num_steps={T}, dim={D}, latent_dim={L}, input_dim={n_in}, "
                      f"target_dim={n_out}", 8 * n_floats, what="the task's arrays")
    Q, Rq = np.linalg.qr(task_rng.standard_normal((L, L)))
    A = Q * np.where(np.diag(Rq) < 0, -1.0, 1.0)          # orthogonal, unique given the draw
    C = task_rng.standard_normal((D, L))
    W_in, b_in = task_rng.standard_normal((n_in, D)), task_rng.standard_normal(n_in)
    W_out, b_out = task_rng.standard_normal((n_out, D)), task_rng.standard_normal(n_out)
    u = np.empty((B, T + 1, L))
    u[:, 0] = rng.standard_normal((B, L))
    for t in range(T):
        u[:, t + 1] = 0.8 * u[:, t] + 0.2 * u[:, t] @ A.T
    v = u @ C.T
    if noise_std > 0.0:
        v += noise_std * rng.standard_normal(v.shape)
    x = np.sin(v[:, :T] @ W_in.T + b_in)
    target = np.sin(v[:, 1:] @ W_out.T + b_out)
    return LowRankForecastTrials(x, target)


def generate(name, batch_size, rng=None, **kwargs):
    """Draw a batch of the task called ``name`` (one of :data:`TASK_NAMES`).

    ``memory_pro``, ``memory_anti``, ``delay_pro`` and ``delay_anti`` call
    :func:`memory_pro` with the matching flags; ``flip_flop`` and
    ``multitask`` call those generators. ``kwargs`` are passed on.
    """
    name = check_choice("task", name, TASK_NAMES)
    if name in MEMORY_RULES:
        anti, delay = MEMORY_RULES[name]
        return memory_pro(batch_size, rng, anti=anti, delay=delay, **kwargs)
    if name == "flip_flop":
        return flip_flop(batch_size, rng, **kwargs)
    if name == "low_rank_forecast":
        return low_rank_forecast(batch_size, rng, **kwargs)
    return multitask(batch_size, rng, **kwargs)
