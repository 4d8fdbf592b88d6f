"""lstm: character-level LSTM language models in JAX/Flax, with a hand-written, gate-tested cell."""
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lstm.cells.lstm import GATE_ORDER, Gates, LSTMState
    from lstm.layer import LSTMCell
    from lstm.model import CharLSTM, ModelConfig, trace
    from lstm.sample import Generator
    from lstm.state import load_model

# Imported on first use, not with the package: `from lstm import cli` in a script must not pay
# for JAX before the script's --help is printed.
_EXPORTS = {"GATE_ORDER": "lstm.cells.lstm", "Gates": "lstm.cells.lstm", "LSTMState": "lstm.cells.lstm",
            "LSTMCell": "lstm.layer", "CharLSTM": "lstm.model", "ModelConfig": "lstm.model", "trace": "lstm.model",
            "Generator": "lstm.sample", "load_model": "lstm.state"}
__all__ = ["CharLSTM", "GATE_ORDER", "Gates", "Generator", "LSTMCell", "LSTMState", "ModelConfig", "load_model",
           "trace"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lstm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
