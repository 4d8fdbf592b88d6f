"""lstm: character-level LSTM language models in JAX/Flax, with a hand-written, gate-tested cell."""
from lstm.cell import GATE_ORDER, Gates, LSTMCell, LSTMState
from lstm.model import CharLSTM, trace
from lstm.sample import Generator

__all__ = ["CharLSTM", "GATE_ORDER", "Gates", "Generator", "LSTMCell", "LSTMState", "trace"]
