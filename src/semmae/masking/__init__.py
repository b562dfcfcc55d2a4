"""Semantic-guided masking (paper Sec. 3.2, Algorithm 1) and the baselines of Table 3 / Figure 1."""
