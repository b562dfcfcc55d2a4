"""Pretraining engine (paper Sec. 4.1): optimisation, schedules, checkpoints, distributed training."""
