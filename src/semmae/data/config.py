"""Configs of ``semmae data synth | check | pack``. No numpy or torch here: ``semmae <verb> --help`` reads these."""

from __future__ import annotations

from dataclasses import dataclass

from semmae.config import option

#: how the synthetic set's parts are coloured (:mod:`semmae.data.synth`): "class" = a fixed look per (class,
#: part type); "random" = a fresh look per image
STYLES = ("class", "random")


@dataclass
class SynthConfig:
    """The synthetic part dataset (:mod:`semmae.data.synth`)."""

    out: str = option("", "output folder (must not hold a dataset already)")
    num_images: int = option(500, "images in total, train + val")
    size: int = option(64, "image side in pixels")
    seed: int = option(0, "random seed: the same seed writes the same files")
    val_fraction: float = option(0.2, "share of each class written to val/")
    num_classes: int = option(5, "object classes to use (1-5)")
    style: str = option(
        "class",
        "part colouring: 'class' = a fixed hue and texture per (class, part type), so parts and "
        "classes show in their colours; 'random' = a fresh look per part type in every image, so only shape "
        "and layout identify them (a harder test of learned representations)",
        choices=STYLES,
    )

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.out:
            raise UserError("--out is required")
        if not 1 <= self.num_classes <= 5:
            raise UserError(f"--num-classes must be 1..5, got {self.num_classes}")


@dataclass
class CheckConfig:
    """Scan a dataset for unreadable and unusual images."""

    data: str = option(
        "", "ImageFolder root (root/<class>/<image>), or a pack (every shard's checksum is verified)"
    )

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.data:
            raise UserError("--data is required")


@dataclass
class PackConfig:
    """Decode a dataset once into shards (``semmae.data.packed``)."""

    data: str = option("", "ImageFolder root (root/<class>/<image>)")
    out: str = option("", "pack folder to write (an unfinished one is resumed)")
    side: int = option(
        256,
        "stored side in pixels (the whole image resized to side x side): the training --img-size for "
        "--augment flip, a bit more (e.g. 256 for 224) for crop-flip",
    )
    parts: str | None = option(None, "part cache of this dataset (`semmae parts export`) to pack alongside")
    shard_size: int = option(2048, "images per shard")
    num_workers: str = option("auto", "decoding processes, or 'auto' (every available core but one)")
    overwrite: bool = option(False, "replace a finished pack at --out")

    def validate(self) -> None:
        from semmae.data.workers import check_num_workers
        from semmae.errors import UserError

        if not self.data or not self.out:
            raise UserError("--data and --out are required")
        check_num_workers(self.num_workers)


@dataclass
class SubsetConfig:
    """A class-balanced, seeded subset of an ImageFolder (:mod:`semmae.data.subset`)."""

    data: str = option("", "ImageFolder root (root/<class>/<image>), e.g. imagenette/train")
    out: str = option("", "subset folder: missing, empty or an earlier subset")
    per_class: int = option(0, "images kept in every class")
    seed: int = option(0, "selection seed: the same seed keeps the same files everywhere")
    copy: bool = option(False, "copy the images instead of symlinking them")
    allow_fewer: bool = option(
        False, "keep every image of a class smaller than --per-class instead of refusing"
    )

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.data or not self.out:
            raise UserError("--data and --out are required")
        if self.per_class < 1:
            raise UserError(f"--per-class must be >= 1, got {self.per_class}")


#: what ``semmae data get`` downloads, and the Imagenette sizes it offers (the archive's shorter image side)
GET_DATASETS = ("imagenette", "cub")
IMAGENETTE_SIZES = ("160", "320", "full")


@dataclass
class GetConfig:
    """Download, verify and unpack a public dataset (:mod:`semmae.data.get`)."""

    dataset: str = option(
        "",
        "imagenette (an ImageFolder with train/ and val/) or cub (CUB-200-2011: train/ and val/ plus "
        "keypoints.csv for `parts eval --keypoints`); also as the positional DATASET",
    )
    size: str = option(
        "",
        "Imagenette's shorter image side: 160, 320 or full (default 160); not for cub",
    )
    out: str = option(
        "",
        "folder to write: new, empty, or an unfinished `data get` of the same dataset (resumed); default "
        "data/imagenette2-160 (-320, imagenette2 for full) or data/cub200",
    )

    def validate(self) -> None:
        from semmae.errors import UserError

        if not self.dataset:
            raise UserError("name the dataset: semmae data get imagenette|cub")
        if self.dataset not in GET_DATASETS:
            raise UserError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(GET_DATASETS)}")
        if self.size and self.size not in IMAGENETTE_SIZES:
            raise UserError(f"--size must be one of {', '.join(IMAGENETTE_SIZES)}, got {self.size!r}")
        if self.dataset == "cub" and self.size:
            raise UserError("--size is Imagenette's image size; CUB-200-2011 comes in one size")
