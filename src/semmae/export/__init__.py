"""``semmae export``: a checkpoint in the form users load it. A pretraining or bootstrap checkpoint gives its encoder
as a timm model (:func:`semmae.engine.export.export_encoder`); a part checkpoint (``semmae parts train``) gives the
part learner of Sec. 3.1 as a folder, its head and its frozen encoder (:func:`semmae.parts.publish.export_part_learner`).

This stage sits above both: the encoder export is a foundation (``engine/``) and knows nothing of the parts stage.
Importing this module imports no torch (``semmae --help``).
"""

from __future__ import annotations

from pathlib import Path


def _source(path: str | Path) -> Path:
    """A checkpoint file as given; a ``semmae parts train`` run folder -> its ``checkpoint.pth``; a pretraining (or
    bootstrap) run folder -> its latest checkpoint."""
    from semmae.parts.train import CHECKPOINT_NAME
    from semmae.utils.io import checkpoint_file

    path = Path(path)
    if path.is_dir() and (path / CHECKPOINT_NAME).is_file() and not (path / "checkpoints").is_dir():
        return path / CHECKPOINT_NAME
    return checkpoint_file(path)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str | None = None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
) -> Path:
    """What ``semmae export`` writes for ``checkpoint`` (a file or run folder) at ``out``: a part learner's folder
    for a part checkpoint (``fmt`` must be None), else the encoder in ``fmt`` (:data:`semmae.engine.export.FORMATS`;
    None: from ``out``'s name); with ``push_to_hub`` (``USER/REPO``) the folder is uploaded. An earlier export at
    ``out`` is replaced only with ``overwrite``; anything else there is refused. Returns the path written."""
    from semmae.engine import export
    from semmae.errors import UserError
    from semmae.parts.checkpoint import FORMAT as PARTS_FORMAT
    from semmae.utils.io import load_checkpoint

    path = _source(checkpoint)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == PARTS_FORMAT:  # the part learner of Sec. 3.1
        from semmae.parts.publish import export_part_learner

        if fmt == "safetensors":
            raise UserError(
                "a part learner exports to a folder (its head + its frozen encoder); drop --format"
            )
        return export_part_learner(path, out, push_to_hub, overwrite=overwrite)
    return export.export_encoder(path, out, fmt, push_to_hub, ckpt=ckpt, overwrite=overwrite)
