"""A second implementation: our LSTM against torch.nn.LSTM and our GRU against torch.nn.GRU, with
the same weights copied across, in float64. Skipped where torch is not installed (it is an
optional benchmark peer: requirements-bench.txt).

PyTorch stores each layer's weights [G·H, I] with the gates along the rows, in our order (i, f,
g, o and r, z, n), and two biases; ours are [I, G·H] with one bias, so W_x = weight_ihᵀ, W_h =
weight_hhᵀ and b = bias_ih + bias_hh, except the GRU's b_hn, which sits inside its reset gate
and is our `b_h`."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lstm.cells.gru import GRUState
from lstm.cells.lstm import LSTMState
from lstm.layer import LSTMCell
from tests.test_cell import float64

torch = pytest.importorskip("torch")

B, T, I, H = 3, 4, 5, 6


def ours(cell, module, xs, h0, c0=None):
    """Our layer with `module`'s weights: (outputs [B, T, H], final carry)."""
    weights = {name: param.detach().numpy() for name, param in module.named_parameters()}
    gates = len(weights["weight_ih_l0"]) // H
    bias_hh = weights["bias_hh_l0"].copy()
    layer = LSTMCell(I, H, rngs=nnx.Rngs(0), param_dtype=jnp.float64, cell=cell)
    layer.W_x[...] = jnp.asarray(weights["weight_ih_l0"].T)
    layer.W_h[...] = jnp.asarray(weights["weight_hh_l0"].T)
    if cell == "gru":
        layer.extras["b_h"][...] = jnp.asarray(bias_hh[2 * H:])
        bias_hh[2 * H:] = 0.0
    layer.b[...] = jnp.asarray(weights["bias_ih_l0"] + bias_hh)
    assert layer.W_x[...].shape == (I, gates * H)
    carry = GRUState(jnp.asarray(h0)) if c0 is None else LSTMState(jnp.asarray(h0), jnp.asarray(c0))
    final, hs = layer.scan(layer.project_inputs(jnp.swapaxes(jnp.asarray(xs), 0, 1)), carry)
    return np.swapaxes(np.asarray(hs), 0, 1), final


def inputs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(B, T, I)), rng.normal(0, 0.5, (B, H)), rng.normal(0, 0.5, (B, H))


def torch_module(kind):
    torch.manual_seed(0)
    module = kind(I, H, batch_first=True).double()
    with torch.no_grad():  # O(1) weights, so no gate sits in a flat region
        for param in module.parameters():
            param.normal_(0, 0.5)
    return module


def test_lstm_equals_torch_lstm_in_float64():
    xs, h0, c0 = inputs()
    module = torch_module(torch.nn.LSTM)
    want, (h_n, c_n) = module(torch.from_numpy(xs), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
    with float64():
        got, final = ours("lstm", module, xs, h0, c0)
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(final.c, c_n[0].detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(final.h, h_n[0].detach().numpy(), rtol=1e-12, atol=1e-12)


def test_gru_equals_torch_gru_in_float64():
    xs, h0, _ = inputs()
    module = torch_module(torch.nn.GRU)
    want, h_n = module(torch.from_numpy(xs), torch.from_numpy(h0)[None])
    with float64():
        got, final = ours("gru", module, xs, h0)
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(final.h, h_n[0].detach().numpy(), rtol=1e-12, atol=1e-12)
