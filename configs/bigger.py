"""The tutorial's bigger model, exactly: LSTM(256) → Dropout(0.2) → LSTM(256) → Dropout(0.2) →
Dense(V), scaled input, every stride-1 window of 100 characters predicting the next one.

    python scripts/train.py --config=configs/bigger.py

Keras: ≥ 700 s/epoch, best training loss 1.2219 at epoch 47 of 50. Add
--config.data.val_fraction=0.1 --config.checkpoint.monitor=val_loss for a held-out score and
the best held-out checkpoint (configs/small.py says why both).
"""
from configs import small


def get_config():
    config = small.get_config()
    config.name = "bigger"
    config.model.hidden_sizes = (256, 256)
    config.train.batch_size = 64  # the tutorial's bigger model
    config.train.num_epochs = 50
    return config
