"""`semmae demo`: the whole pipeline on the synthetic dataset, with a report."""
