"""The probes a pipeline runs on the fast linear probe's saved features (``semmae linprobe --mode fast`` keeps its
center-crop class-token features in ``<out>/features.pt``): the weighted kNN (DINO protocol) and a logistic
regression trained to convergence, both on the very features the fast probe saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the weighted kNN of the harness (DINO's: cosine similarity, k = 20, T = 0.07)
KNN_K, KNN_TEMPERATURE = 20, 0.07
#: the logistic regression's iteration cap (L-BFGS); stopping before it = converged
LOGREG_MAX_ITER = 1000


def probe_features(probe_dir: str | Path) -> dict[str, Any]:
    """The fast probe's saved features: ``train_x`` [N, D], ``train_y`` [N], ``val_x`` [M, D], ``val_y`` [M],
    ``classes`` and ``key`` (what they were computed with)."""
    from semmae.eval.linprobe import FEATURES_FILE
    from semmae.utils.io import load_checkpoint

    return load_checkpoint(Path(probe_dir) / FEATURES_FILE)


def knn_probe(
    feats: dict[str, Any], k: int = KNN_K, temperature: float = KNN_TEMPERATURE
) -> dict[str, float]:
    """``{"top1", "top5"}`` (percent) of the weighted kNN classifier, training features as the memory bank."""
    from semmae.engine.knn_vote import knn_accuracy

    return knn_accuracy(
        feats["train_x"],
        feats["train_y"],
        feats["val_x"],
        feats["val_y"],
        k,
        temperature,
        len(feats["classes"]),
    )


def logistic_probe(feats: dict[str, Any], max_iter: int = LOGREG_MAX_ITER) -> tuple[float, bool]:
    """Top-1 (percent) of a standardised multinomial logistic regression (L-BFGS, C = 1; unlike the few-hundred-step
    fast probe it runs to convergence), and whether it converged (stopped before ``max_iter``)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as the flag instead
        clf.fit(feats["train_x"].float().cpu().numpy(), feats["train_y"].cpu().numpy())
    pred = clf.predict(feats["val_x"].float().cpu().numpy())
    converged = bool((clf[-1].n_iter_ < max_iter).all())
    return float((pred == feats["val_y"].cpu().numpy()).mean() * 100.0), converged
