"""Timing harnesses behind `scripts/benchmark.py`: our training step against PyTorch, Flax and
Keras peers (train_step, peers), and generation speed (sampling). Nothing in the core `lstm`
package imports this one; the peers' packages are optional (requirements-bench.txt)."""
