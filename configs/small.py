"""The tutorial's small model, exactly: LSTM(256) → Dropout(0.2) → Dense(V), scaled input.

    python scripts/train.py --config=configs/small.py

Keras on a K520: ~300 s/epoch, best training loss 1.9435 at epoch 19 of 20 (with a 47-symbol
vocabulary; ours has 45, see README). Add --config.data.val_fraction=0.1 for a held-out score,
evaluated every epoch, and --config.checkpoint.monitor=val_loss to keep the best held-out
checkpoint; without it the best is by training loss, the tutorial's rule, which here picks a
model six epochs past its best on held-out text (docs/results.md).
"""
from configs import default


def get_config():
    config = default.get_config()
    config.name = "small"
    config.data.val_fraction = 0.0  # the tutorial trains on every window and holds none out
    config.model.hidden_sizes = (256,)
    config.model.matmul_dtype = "float32"  # the tutorial's arithmetic, whatever the CPU offers
    config.train.batch_size = 128  # the tutorial's small model
    config.train.num_epochs = 20
    config.checkpoint.monitor = "train_loss"  # Keras ModelCheckpoint(monitor="loss", save_best_only)
    return config
