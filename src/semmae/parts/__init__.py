"""Semantic part learning (paper Sec. 3.1, Eq. 1-7)."""
