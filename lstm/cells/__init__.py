"""Every recurrent cell, one definition each (the contract: lstm/cells/contract.py).

`get_cell(name, gate_activation=...)` builds the cell `model.cell` names. `np` is an alias of
`lstm` (Greff et al.'s name for the LSTM without peepholes), not a copy: both are `LSTM`.
"""
from __future__ import annotations

import functools

from lstm.cells.contract import Cell
from lstm.cells.gru import GRU
from lstm.cells.lstm import LSTM, FullGateRecurrence, LayerNorm, Peephole

CELLS = {
    "lstm": LSTM,
    "np": LSTM,
    "peephole": Peephole,
    "nig": functools.partial(Peephole, removed="i"),
    "nfg": functools.partial(Peephole, removed="f"),
    "nog": functools.partial(Peephole, removed="o"),
    "niaf": functools.partial(Peephole, input_activation=False),
    "noaf": functools.partial(Peephole, output_activation=False),
    "cifg": functools.partial(Peephole, coupled=True),
    "fgr": FullGateRecurrence,
    "layernorm": LayerNorm,
    "gru": GRU,
}

def get_cell(name: str, **options) -> Cell:
    """The cell `name` with its options (gate_activation)."""
    if name not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {name!r}")
    return CELLS[name](**options)
