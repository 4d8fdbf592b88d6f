"""lstm: character-level LSTM language models in JAX/Flax, with a hand-written, gate-tested cell."""
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lstm.cell import GATE_ORDER, Gates, LSTMCell, LSTMState
    from lstm.model import CharLSTM, trace
    from lstm.sample import Generator

# Imported on first use, not with the package: `from lstm import cli` in a script must not pay
# for JAX before the script's --help is printed.
_EXPORTS = {"GATE_ORDER": "lstm.cell", "Gates": "lstm.cell", "LSTMCell": "lstm.cell",
            "LSTMState": "lstm.cell", "CharLSTM": "lstm.model", "trace": "lstm.model",
            "Generator": "lstm.sample"}
__all__ = ["CharLSTM", "GATE_ORDER", "Gates", "Generator", "LSTMCell", "LSTMState", "trace"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lstm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
