"""semmae: SemMAE (Li et al., NeurIPS 2022) - semantic part learning, semantic-guided masking, MAE pretraining
and evaluation, as one package.

Stages mirror the paper: :mod:`semmae.data` (datasets, joint transforms, part-map cache),
:mod:`semmae.parts` (Sec. 3.1, Eq. 1-7), :mod:`semmae.masking` (Sec. 3.2, Algorithm 1),
:mod:`semmae.models` (the MAE), :mod:`semmae.engine` (pretraining), :mod:`semmae.eval` (Sec. 4).
"""

__version__ = "0.1.0"
