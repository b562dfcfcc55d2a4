"""``semmae segment train|eval``: UPerNet semantic segmentation on a ViT encoder (paper Table 7)."""

from __future__ import annotations

from semmae.config import add_verb, add_verb_group
from semmae.eval.segmentation.config import SegmentEvalConfig, SegmentTrainConfig

TRAIN_EPILOG = """examples:
  semmae segment train --config segment/ade20k_vitb16 --data /data/ADEChallengeData2016 --checkpoint semmae.pth
  semmae segment train --config segment/tiny_synth --data synth/ --random-init --arch vit_tiny_patch8
  torchrun --nproc_per_node 8 -m semmae.cli segment train --config segment/ade20k_vitb16 --data ... --checkpoint ...
"""
EVAL_EPILOG = """example:
  semmae segment eval --checkpoint runs/segment --out runs/segment-eval
"""


def _train(cfg: SegmentTrainConfig) -> int:
    from semmae.eval.segmentation.engine import train

    train(cfg)
    return 0


def _eval(cfg: SegmentEvalConfig) -> int:
    from semmae.eval.segmentation.engine import evaluate_checkpoint

    evaluate_checkpoint(cfg)
    return 0


def register(sub) -> None:
    actions = add_verb_group(
        sub,
        "segment",
        "Semantic segmentation transfer with UPerNet (paper Table 7)",
        "Semantic segmentation transfer with UPerNet on a ViT encoder (paper Table 7)",
    )
    add_verb(
        actions,
        "train",
        SegmentTrainConfig,
        _train,
        "train UPerNet + auxiliary FCN on a (pretrained) ViT encoder",
        "Train UPerNet on a ViT encoder; writes checkpoints, results.json, predictions.png, config.yaml, "
        "log.jsonl and TensorBoard events to --out.",
        TRAIN_EPILOG,
    )
    add_verb(
        actions,
        "eval",
        SegmentEvalConfig,
        _eval,
        "sliding-window mIoU / mAcc / aAcc of a trained segmentor",
        "Evaluate a `segment train` checkpoint on the validation split; unset data options default to the "
        "training run's.",
        EVAL_EPILOG,
    )
