"""kpref.mse_loss against torch.nn.MSELoss and torch autograd (float64): value, e = ∂L/∂z, readout gradients."""

import numpy as np
import pytest

import kpref

torch = pytest.importorskip("torch")


def _torch_loss(z, target, w_out, b_out, mask, reduction, R):
    zt = torch.tensor(z, requires_grad=True)
    wt = torch.tensor(w_out, requires_grad=True)
    bt = torch.tensor(b_out, requires_grad=True)
    y = zt[..., :R] @ wt.T + bt
    tt = torch.tensor(target)
    if mask is None:
        loss = torch.nn.MSELoss(reduction=reduction)(y, tt)
    else:  # torch's idiom for a masked MSE: reduction='none', weight, then sum or mean over every entry
        m = torch.tensor(mask, dtype=torch.float64)
        m = m[..., None] if m.ndim == 2 else m
        per = torch.nn.MSELoss(reduction="none")(y, tt) * m
        loss = per.sum() if reduction == "sum" else per.mean()
    loss.backward()
    return loss.item(), zt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("mask_kind", [None, "bt", "bto"])
@pytest.mark.parametrize("cell_kind", ["gru", "lstm"])
def test_mse_loss_matches_torch(reduction, mask_kind, cell_kind):
    rng = np.random.default_rng(7)
    B, T, N, H, O = 3, 5, 2, 4, 2
    cell = kpref.GRU(N, H) if cell_kind == "gru" else kpref.LSTM(N, H)  # LSTM: the readout reads h of [h, c]
    theta = cell.init_params(rng)
    z = kpref.simulate(cell, theta, rng.standard_normal((B, T, N)))
    R = cell.output_size
    w_out, b_out = rng.standard_normal((O, R)), rng.standard_normal(O)
    target = rng.standard_normal((B, T, O))
    mask = {None: None, "bt": rng.random((B, T)) < 0.6, "bto": rng.random((B, T, O)) < 0.6}[mask_kind]
    got = kpref.mse_loss(z, target, w_out, b_out, mask=mask, reduction=reduction, cell=cell)
    value, e, gw, gb = _torch_loss(z, target, w_out, b_out, mask, reduction, R)
    assert abs(got.value - value) <= 1e-12 * abs(value)
    for mine, ref in ((got.e, e), (got.grad_w_out, gw), (got.grad_b_out, gb)):
        assert mine.shape == ref.shape
        assert np.linalg.norm(mine - ref) <= 1e-12 * np.linalg.norm(ref)
    if cell_kind == "lstm":
        assert not got.e[..., H:].any()  # the cell state c is not read out


def test_the_comparison_catches_a_wrong_mean_divisor():
    """Dividing the masked mean by the number of unmasked entries (another common convention) is caught."""
    rng = np.random.default_rng(0)
    z, target = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 2))
    w_out, b_out = rng.standard_normal((2, 4)), np.zeros(2)
    mask = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    got = kpref.mse_loss(z, target, w_out, b_out, mask=mask, reduction="mean")
    value = _torch_loss(z, target, w_out, b_out, mask, "mean", 4)[0]
    wrong = got.value * (2 * 3 * 2) / (mask.sum() * 2)
    assert abs(got.value - value) <= 1e-12 * value and abs(wrong - value) > 1e-3 * value
