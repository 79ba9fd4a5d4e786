"""Training AG-VAS: one accelerate loop from a CPU to multi-GPU DeepSpeed."""
