"""The demo's recipe: the presets its stages start from, the pretrainings it compares and how the report names
them, the figures' sizes (read by :mod:`semmae.demo.pipeline` and :mod:`semmae.demo.make_report`); and its part
learning, which the lab's reproduction harness and campaigns run too (:func:`part_learning_config`)."""

from __future__ import annotations

from typing import Any

#: the part-learning recipe of the demo (cached tokens, light decoder, cosine Eq. 2, softmax over parts);
#: the budget sets the image size, part count, blur and epochs
PARTS_PRESET = "parts/tiny_cpu"
#: the fast linear probe's learning-rate sweep (batch 64: MAE's default rates sit on the sweep's top edge)
PROBE_PRESET = "eval/linprobe_cpu_tiny"
#: the two pretrainings compared; SemMAE's gamma is PretrainConfig's default, the paper's 2
SEMMAE_MASKING, MAE_MASKING = "adaptive", "random"
#: the pretrainings of the demo: SemMAE on the learned parts, SemMAE on the ground-truth parts (the oracle: what
#: perfect part learning would buy at this scale), MAE; the key, the masking and the part cache it reads
METHODS = {
    "semmae": (SEMMAE_MASKING, "cache_train"),
    "semmae_gt": (SEMMAE_MASKING, "cache_gt_train"),
    "mae": (MAE_MASKING, None),
}
#: how the report names them
METHOD_LABELS = {
    "semmae": "SemMAE (learned parts)",
    "semmae_gt": "SemMAE (ground-truth parts)",
    "mae": "MAE (random masking)",
    "random init": "untrained encoder",
}
#: the figures: images drawn with their parts, and the mask schedule's alphas (per part -> whole parts)
PART_FIGURE_IMAGES, MASK_FIGURE_IMAGES, MASK_FIGURE_ALPHAS = 6, 3, (0.0, 0.5, 1.0)


def part_learning_config(
    budget: Any,
    *,
    data: str,
    out: str,
    encoder_checkpoint: str,
    encoder: str,
    seed: int,
    device: str,
    num_workers: int,
) -> Any:
    """``semmae parts train``'s config of a part stage, the demo's and the lab's alike: :data:`PARTS_PRESET` with the
    budget's image size, part count, blur, epochs and batch size (``budget``: a demo
    :class:`~semmae.demo.budgets.Budget` or the lab's preset, which name these fields alike); ``encoder``: the
    part encoder's registered name, "" = the checkpoint's own; an interrupted run continues (``resume auto``)."""
    from semmae.cli import stage_config

    return stage_config(
        "parts train",
        PARTS_PRESET,
        data=data,
        out=out,
        encoder_checkpoint=encoder_checkpoint,
        **({"encoder": encoder} if encoder else {}),
        img_size=budget.img_size,
        num_parts=budget.num_parts,
        blur_kernel=budget.blur_kernel,
        epochs=budget.parts_epochs,
        batch_size=budget.batch_size,
        seed=seed,
        resume="auto",
        device=device,
        num_workers=num_workers,
    )
