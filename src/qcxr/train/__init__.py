"""Training: train state and step, loop, early stopping, checkpoints, data parallelism."""
