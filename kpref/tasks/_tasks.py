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
of its most recent pulse (0 before its first pulse). Draw order: the pulse
events (one ``(B, T, n_bits)`` uniform block), the signs (one ``(B, T,
n_bits)`` uniform block), then the noise if ``noise_std > 0``. No mask.

**Multitask**: trials of several memory-pro rules mixed in one batch, the rule
given to the network as a one-hot input held on for the whole trial:
``x[b, t] = [fix, cos θ, sin θ, onehot(rule_b)]`` (noise is not added to the
rule inputs). Rules are assigned so that each appears ``⌊B/R⌋`` or
``⌈B/R⌉`` times (``arange(B) % R``, permuted by the generator), and the
returned ``rule`` array (B,) of integer indices into ``rules`` lets the
caller split the error signal per sub-task.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._checks import as_generator, check_bool, check_choice, check_positive_int, check_size_memory

__all__ = [
    "MemoryProTrials",
    "FlipFlopTrials",
    "MultitaskTrials",
    "MEMORY_RULES",
    "TASK_NAMES",
    "memory_pro",
    "flip_flop",
    "multitask",
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
TASK_NAMES = tuple(MEMORY_RULES) + ("flip_flop", "multitask")


class MemoryProTrials(NamedTuple):
    """``(x, target, mask)`` of a memory-pro batch: (B, T, 3), (B, T, 3), (B, T)."""

    x: np.ndarray
    target: np.ndarray
    mask: np.ndarray


class FlipFlopTrials(NamedTuple):
    """``(x, target)`` of a flip-flop batch: (B, T, n_bits) each."""

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
                   response_steps, grace_steps, noise_std, rule_inputs=0, rule=None):
    """Shared generator: per-trial ``anti``/``delay`` flags (B,) bool; checked scalars."""
    B = batch_size
    F, S, R = fixation_steps, stimulus_steps, response_steps
    low, high = memory_steps
    T = F + S + high + R
    _check_trial_memory(B, T, 3 + rule_inputs, "fixation_steps + stimulus_steps + memory_steps + response_steps "
                        f"= {T}")
    angle = rng.uniform(0.0, 2.0 * np.pi, size=B)
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
        go = F + S + int(delay_len[b])          # first step of the response period
        x[b, :go, 0] = 1.0
        stim_end = T if delay[b] else F + S
        x[b, F:stim_end, 1] = np.cos(angle[b])
        x[b, F:stim_end, 2] = np.sin(angle[b])
        target[b, :go, 0] = 1.0
        target[b, go:, 1] = np.cos(out_angle[b])
        target[b, go:, 2] = np.sin(out_angle[b])
        mask[b, go:go + grace_steps] = 0.0
        if rule is not None:
            x[b, :, 3 + int(rule[b])] = 1.0
    if noise_std > 0.0:
        noise = rng.standard_normal((B, T, N))
        x[:, :, :3] += noise_std * noise[:, :, :3]
    return x, target, mask


def _check_memory_kwargs(fixation_steps, stimulus_steps, memory_steps, response_steps, grace_steps, noise_std):
    kw = dict(
        fixation_steps=check_positive_int("fixation_steps", fixation_steps),
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


def memory_pro(batch_size, rng=None, *, anti=False, delay=False, fixation_steps=10, stimulus_steps=20,
               memory_steps=30, response_steps=30, grace_steps=5, noise_std=0.0):
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

    Returns
    -------
    MemoryProTrials
        ``(x, target, mask)`` of shapes (B, T, 3), (B, T, 3), (B, T) with
        ``T = fixation + stimulus + max memory + response`` steps.

    Notes
    -----
    The timing, the inputs, the targets and the mask are defined in the
    module docstring of :mod:`kpref.tasks._tasks`. The defaults give ``T = 90``,
    the trial length of the KPFlow paper.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    rng = as_generator(rng)
    anti = check_bool("anti", anti)
    delay = check_bool("delay", delay)
    kw = _check_memory_kwargs(fixation_steps, stimulus_steps, memory_steps, response_steps, grace_steps,
                              noise_std)
    T = kw["fixation_steps"] + kw["stimulus_steps"] + kw["memory_steps"][1] + kw["response_steps"]
    _check_trial_memory(batch_size, T, 3, f"fixation_steps + stimulus_steps + memory_steps + response_steps = {T}")
    x, target, mask = _memory_family(batch_size, rng, np.full(batch_size, anti), np.full(batch_size, delay), **kw)
    return MemoryProTrials(x, target, mask)


def flip_flop(batch_size, rng=None, *, n_bits=3, num_steps=50, p_flip=0.05, noise_std=0.0):
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

    Returns
    -------
    FlipFlopTrials
        ``(x, target)``, both (B, T, n_bits): ``x`` holds the ±1 pulses,
        ``target`` the sign of each bit's most recent pulse (0 before the
        first one).
    """
    batch_size = check_positive_int("batch_size", batch_size)
    rng = as_generator(rng)
    n_bits = check_positive_int("n_bits", n_bits)
    T = check_positive_int("num_steps", num_steps)
    p_flip = _check_probability("p_flip", p_flip)
    noise_std = _check_nonneg_float("noise_std", noise_std)
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
              noise_std=0.0):
    """A batch mixing memory-pro rules, with a one-hot rule input.

    Parameters
    ----------
    batch_size : int
    rng : None, int or numpy.random.Generator
    rules : tuple of str
        Distinct names from ``memory_pro``, ``memory_anti``, ``delay_pro``,
        ``delay_anti``; rule ``r`` is input channel ``3 + r``.
    fixation_steps, stimulus_steps, memory_steps, response_steps, grace_steps, noise_std
        As in :func:`memory_pro`, shared by every rule.

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
    R = len(rules)
    T = kw["fixation_steps"] + kw["stimulus_steps"] + kw["memory_steps"][1] + kw["response_steps"]
    _check_trial_memory(batch_size, T, 3 + R, f"fixation_steps + stimulus_steps + memory_steps + response_steps "
                        f"= {T}")
    rule = rng.permutation(np.arange(batch_size, dtype=np.int64) % R)
    flags = np.array([MEMORY_RULES[r] for r in rules], dtype=bool)  # (R, 2): anti, delay
    x, target, mask = _memory_family(batch_size, rng, flags[rule, 0], flags[rule, 1], rule_inputs=R,
                                     rule=rule, **kw)
    return MultitaskTrials(x, target, mask, rule)


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
    return multitask(batch_size, rng, **kwargs)
