"""``semmae segment train|eval``: UPerNet semantic segmentation on a ViT encoder (paper Table 7)."""

from __future__ import annotations

import argparse

from semmae.config import add_config_args, resolve_config
from semmae.eval.segmentation.config import SegmentEvalConfig, SegmentTrainConfig

TRAIN_EPILOG = """examples:
  semmae segment train --config segment/ade20k_vitb16 --data /data/ADEChallengeData2016 --checkpoint semmae.pth
  semmae segment train --config segment/tiny_synth --data synth/ --random-init --arch vit_tiny_patch8
  torchrun --nproc_per_node 8 -m semmae.cli segment train --config segment/ade20k_vitb16 --data ... --checkpoint ...
"""
EVAL_EPILOG = """example:
  semmae segment eval --checkpoint runs/segment --out runs/segment-eval
"""


def _train(args) -> int:
    from semmae.eval.segmentation.engine import train

    train(resolve_config(SegmentTrainConfig, args))
    return 0


def _eval(args) -> int:
    from semmae.eval.segmentation.engine import evaluate_checkpoint

    evaluate_checkpoint(resolve_config(SegmentEvalConfig, args))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="Semantic segmentation transfer with UPerNet (paper Table 7)",
        description="Semantic segmentation transfer with UPerNet on a ViT encoder (paper Table 7)",
    )
    actions = p.add_subparsers(dest="action", metavar="{train,eval}", parser_class=type(p))
    actions.required = True
    t = actions.add_parser(
        "train",
        help="train UPerNet + auxiliary FCN on a (pretrained) ViT encoder",
        description="Train UPerNet on a ViT encoder; writes checkpoints, results.json, "
        "predictions.png, config.yaml, log.jsonl and TensorBoard events to --out.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(t, SegmentTrainConfig)
    t.set_defaults(func=_train)
    e = actions.add_parser(
        "eval",
        help="sliding-window mIoU / mAcc / aAcc of a trained segmentor",
        description="Evaluate a `segment train` checkpoint on the validation split; unset data "
        "options default to the training run's.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(e, SegmentEvalConfig)
    e.set_defaults(func=_eval)
