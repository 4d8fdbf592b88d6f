"""An independent float64 NumPy implementation of the textbook LSTM, for tests only.

Written from the equations, with four separate per-gate matrices and no fused layout, so it
shares no code (and no layout assumptions) with `lstm.cell`.
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
