"""An independent float64 NumPy implementation of the textbook LSTM, for tests only.

Written from the equations, with four separate per-gate matrices and no fused layout, so it
shares no code (and no layout assumptions) with `lstm.cells`.
"""
import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def keras_hard_sigmoid(x):
    """Keras 1 / 2.0-2.2: max(0, min(1, 0.2 x + 0.5))."""
    return np.maximum(0.0, np.minimum(1.0, 0.2 * x + 0.5))


def lstm_sequence(gates, xs, h0, c0, gate_activation="sigmoid"):
    """gates: {"i"|"f"|"g"|"o": {"W_x": [I, H], "W_h": [H, H], "b": [H]}} (float64);
    xs: [B, T, I]. Returns per-step dict of i, f, g, o, c, h, each [B, T, H]."""
    sigma = {"sigmoid": sigmoid, "hard_sigmoid": keras_hard_sigmoid}[gate_activation]
    p = {n: {k: np.asarray(v, np.float64) for k, v in piece.items()} for n, piece in gates.items()}
    h, c = np.asarray(h0, np.float64), np.asarray(c0, np.float64)
    record = {k: [] for k in ("i", "f", "g", "o", "c", "h")}
    for t in range(xs.shape[1]):
        x = np.asarray(xs[:, t], np.float64)
        pre = {n: x @ p[n]["W_x"] + h @ p[n]["W_h"] + p[n]["b"] for n in "ifgo"}
        i, f, o = sigma(pre["i"]), sigma(pre["f"]), sigma(pre["o"])
        g = np.tanh(pre["g"])
        c = f * c + i * g
        h = o * np.tanh(c)
        for name, value in zip("ifgoch", (i, f, g, o, c, h)):
            record[name].append(value)
    return {k: np.stack(v, axis=1) for k, v in record.items()}


def to_numpy_gates(gate_params):
    return {n: {k: np.asarray(v, np.float64) for k, v in piece.items()} for n, piece in gate_params.items()}


def layer_norm(a, gain, bias, eps=1e-5):
    """Ba, Kiros & Hinton (2016), eq. 15-16 (plus the implementation's eps), over the last axis."""
    mu = a.mean(axis=-1, keepdims=True)
    sd = np.sqrt(((a - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    return gain * (a - mu) / sd + bias


def variant_sequence(cell, gates, xs, h0, c0, gate_activation="sigmoid", fed0=None):
    """The cell variants, from the papers' equations, in float64, one gate at a time.

    Greff et al. (2017), "LSTM: A Search Space Odyssey", section II (vanilla LSTM, peepholes
    p_i, p_f on c_{t-1} and p_o on c_t) and section III-B's ablations; Ba et al. (2016), eqs.
    20-22 for layernorm, whose LN acts on all four gates' pre-activations together. gates as
    for `lstm_sequence` plus "p" (peepholes) or the LN gains and biases ("c": gain, bias).
    fgr (Greff et al.'s full gate recurrence) adds to each of i, f, o's pre-activation the
    previous step's i, f, o through nine H×H matrices: gates[n]["R"] is [3H, H], the rows of
    R_in, R_fn, R_on stacked; fed0 [B, 3H], the gates before the first step (default 0)."""
    sigma = {"sigmoid": sigmoid, "hard_sigmoid": keras_hard_sigmoid}[gate_activation]
    p = {n: {k: np.asarray(v, np.float64) for k, v in piece.items()} for n, piece in gates.items()}
    peep = lambda gate: p[gate].get("p", 0.0)  # np (and lstm) have none: Greff's NP
    h, c = np.asarray(h0, np.float64), np.asarray(c0, np.float64)
    record = {k: [] for k in ("i", "f", "g", "o", "c", "h")}
    order = "ifgo"
    H = h.shape[-1]
    previous = np.zeros(h.shape[:-1] + (3 * H,)) if fed0 is None else np.asarray(fed0, np.float64)
    previous = dict(zip("ifo", np.split(previous, 3, axis=-1)))
    for t in range(xs.shape[1]):
        x = np.asarray(xs[:, t], np.float64)
        if cell == "layernorm":
            cat = lambda key: np.concatenate([p[n][key] for n in order])
            Wx = np.concatenate([p[n]["W_x"] for n in order], axis=1)
            Wh = np.concatenate([p[n]["W_h"] for n in order], axis=1)
            a = (layer_norm(h @ Wh, cat("gain_h"), cat("bias_h"))
                 + layer_norm(x @ Wx, cat("gain_x"), cat("bias_x")) + cat("b"))
            pre = dict(zip(order, np.split(a, 4, axis=-1)))
            i, f, g = sigma(pre["i"]), sigma(pre["f"]), np.tanh(pre["g"])
            c_new = f * c + i * g
            o = sigma(pre["o"])
            h = o * np.tanh(layer_norm(c_new, p["c"]["gain"], p["c"]["bias"]))
            c = c_new
        else:
            pre = {n: x @ p[n]["W_x"] + h @ p[n]["W_h"] + p[n]["b"] for n in order}
            if cell == "fgr":
                for n in "ifo":
                    for k, m in enumerate("ifo"):  # R_mn: gate m at t-1 into gate n at t
                        pre[n] = pre[n] + previous[m] @ p[n]["R"][k * H:(k + 1) * H]
            z = pre["g"] if cell == "niaf" else np.tanh(pre["g"])  # block input
            i = np.ones_like(c) if cell == "nig" else sigma(pre["i"] + peep("i") * c)
            if cell == "cifg":
                f = 1.0 - i
            else:
                f = np.ones_like(c) if cell == "nfg" else sigma(pre["f"] + peep("f") * c)
            c = z * i + c * f
            o = np.ones_like(c) if cell == "nog" else sigma(pre["o"] + peep("o") * c)
            h = (c if cell == "noaf" else np.tanh(c)) * o
            g = z
            previous = {"i": i, "f": f, "o": o}
        for name, value in zip("ifgoch", (i, f, g, o, c, h)):
            record[name].append(value)
    return {k: np.stack(v, axis=1) for k, v in record.items()}


def gru_sequence(gates, xs, h0, gate_activation="sigmoid"):
    """Cho et al. (2014)'s GRU in the form cuDNN and PyTorch's nn.GRU document, one gate at a
    time: r = σ(x W_xr + h W_hr + b_r), z = σ(x W_xz + h W_hz + b_z),
    n = tanh(x W_xn + b_n + r ⊙ (h W_hn + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
    gates: {"r"|"z"|"n": {"W_x": [I, H], "W_h": [H, H], "b": [H]}}, with b_hn as gates["n"]["b_h"].
    Returns per-step r, z, n, h, each [B, T, H]."""
    sigma = {"sigmoid": sigmoid, "hard_sigmoid": keras_hard_sigmoid}[gate_activation]
    p = {n: {k: np.asarray(v, np.float64) for k, v in piece.items()} for n, piece in gates.items()}
    h = np.asarray(h0, np.float64)
    record = {k: [] for k in ("r", "z", "n", "h")}
    for t in range(xs.shape[1]):
        x = np.asarray(xs[:, t], np.float64)
        r = sigma(x @ p["r"]["W_x"] + h @ p["r"]["W_h"] + p["r"]["b"])
        z = sigma(x @ p["z"]["W_x"] + h @ p["z"]["W_h"] + p["z"]["b"])
        n = np.tanh(x @ p["n"]["W_x"] + p["n"]["b"] + r * (h @ p["n"]["W_h"] + p["n"]["b_h"]))
        h = (1.0 - z) * n + z * h
        for name, value in zip("rznh", (r, z, n, h)):
            record[name].append(value)
    return {k: np.stack(v, axis=1) for k, v in record.items()}
