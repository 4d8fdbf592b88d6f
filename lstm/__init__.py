"""lstm: character-level LSTM language models in JAX/Flax, with a hand-written, gate-tested cell."""
from lstm.cell import GATE_ORDER, Gates, LSTMCell, LSTMState
from lstm.model import CharLSTM, trace

__all__ = ["CharLSTM", "GATE_ORDER", "Gates", "LSTMCell", "LSTMState", "trace"]
