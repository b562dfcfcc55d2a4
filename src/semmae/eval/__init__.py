"""Evaluation (paper Sec. 4): linear probe, fine-tuning, kNN, fine-grained transfer, segmentation."""
