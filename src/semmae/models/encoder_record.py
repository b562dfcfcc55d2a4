"""The encoder record: one typed, plain-data description of a ViT encoder that travels with its weights (the
encoder the paper evaluates in Sec. 4), and the one table of ViT sizes.

The record is what a timm ``VisionTransformer`` needs to be rebuilt (``img_size``, ``patch_size``, ``embed_dim``,
``depth``, ``num_heads``, ``mlp_ratio``, ``qkv_bias``, ``in_chans``, ``global_pool``) plus what the evaluations
read about how it was trained (``name``, ``trainer``, ``fg_keep``). It travels as:

* every training checkpoint: ``"encoder": record.to_dict()``
  (:class:`semmae.models.checkpoint_schema.TrainState`; older pretrain / bootstrap files: derived from their
  ``model_config`` by its upgrade);
* ``semmae export``: ``record.to_dict()`` as JSON in the safetensors metadata entry ``model_config``;
* :func:`semmae.models.encoder_loading.load_encoder`: reads it back; only files that carry none (timm, iBOT,
  DINO, MAE releases) have it inferred from their weights (:meth:`EncoderRecord.from_state_dict`).

``to_dict()`` is JSON-safe and marked ``{"format": "semmae-encoder", "version": 1}``; :meth:`from_dict` refuses
unknown fields and newer versions (a new field means a new version), so a record is never half read.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from timm.models.vision_transformer import VisionTransformer

from semmae.errors import UserError

__all__ = [
    "EncoderRecord",
    "RECORD_FORMAT",
    "RECORD_VERSION",
    "STANDARD_SIZES",
    "VIT_SIZES",
    "encoder_prefix",
    "encoder_state_dict",
    "misfits",
    "parse_arch",
    "pos_grid",
    "record_of",
    "record_misfits",
    "vit_record",
]

# ViT sizes: name -> (embed_dim, depth, num_heads). tiny..giant are timm's (ViT / DeiT papers); micro is this
# project's test size (32 px models in the test suite and the demo's registry names).
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "micro": (32, 2, 2),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
    "giant": (1408, 40, 16),
}
STANDARD_SIZES = ("tiny", "small", "base", "large", "huge", "giant")  # the ones timm names
_HEADS_BY_DIM = {VIT_SIZES[s][0]: VIT_SIZES[s][2] for s in STANDARD_SIZES}

RECORD_FORMAT = "semmae-encoder"
RECORD_VERSION = 1


def parse_arch(arch: str) -> dict[str, int]:
    """Read size and patch from a name like ``vit_base_patch16_224``, ``mae_vit_large_patch16``, ``base`` or
    ``vit_d192x6h3_patch8_64``."""
    out: dict[str, int] = {}
    name = arch.lower()
    for size, (dim, depth, heads) in VIT_SIZES.items():
        if re.search(rf"(^|_){size}(_|$)", name):
            out.update(embed_dim=dim, depth=depth, num_heads=heads)
            break
    m = re.search(r"(^|_)d(\d+)x(\d+)h(\d+)(_|$)", name)  # EncoderRecord.timm_name of a size off the table
    if m:
        out.update(embed_dim=int(m.group(2)), depth=int(m.group(3)), num_heads=int(m.group(4)))
    m = re.search(r"patch(\d+)", name)
    if m:
        out["patch_size"] = int(m.group(1))
    m = re.search(r"_(\d{2,4})$", name)
    if m and "patch_size" in out:
        out["img_size"] = int(m.group(1))
    if not out:
        raise UserError(
            f"cannot read an architecture from {arch!r}: use a name like vit_base_patch16 "
            f"(sizes: {', '.join(VIT_SIZES)}) or pass embed_dim/depth/num_heads/patch_size"
        )
    return out


# keys of a checkpoint that are not part of the encoder and are dropped on purpose
_DROP_PATTERNS = (
    r"^decoder[._]",  # MAE decoder (decoder_embed, decoder_blocks, decoder_pos_embed, ...)
    r"^mask_token$",  # MAE decoder mask token
    r"^masked_embed$",  # iBOT masked-patch token
    r"^head\.",  # classifier / DINO / iBOT projection heads
    r"^head_dist\.",
)
# wrappers an encoder's keys may sit under: DDP, torch.compile, DINO/iBOT, and other trainers' containers
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.")


def encoder_prefix(sd: dict[str, torch.Tensor]) -> str | None:
    """The prefix under which the encoder lives (``""``, ``backbone.``, ``module.backbone.``, ...), or None."""
    anchors = ("patch_embed.proj.weight", "cls_token")
    for key in sd:
        for anchor in anchors:
            if key.endswith(anchor):
                prefix = key[: -len(anchor)]
                rest = prefix
                while rest:  # the prefix must be made of known wrapper names only
                    for p in _PREFIXES:
                        if rest.startswith(p):
                            rest = rest[len(p) :]
                            break
                    else:
                        break
                if not rest:
                    return prefix
    return None


def encoder_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The encoder inside any state dict: wrapper prefixes stripped, decoder / mask tokens / heads dropped.

    Returns:
        ``(encoder state dict in timm key names, dropped key names)``.
    """
    prefix = encoder_prefix(sd)
    if prefix is None:
        raise UserError(
            "the checkpoint holds no ViT encoder (no 'patch_embed.proj.weight' / 'cls_token' key under a known "
            f"prefix); first keys: {', '.join(list(sd)[:8])}"
        )
    enc: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in sd.items():
        name = key[len(prefix) :]
        if not key.startswith(prefix) or any(re.match(p, name) for p in _DROP_PATTERNS):
            dropped.append(key)
        else:
            enc[name] = value
    return enc, dropped


def pos_grid(enc: dict[str, torch.Tensor]) -> int | None:
    """Side of the square patch grid of the encoder's position table (class token excluded), or None."""
    pos = enc.get("pos_embed")
    if pos is None:
        return None
    n_prefix = 1 if "cls_token" in enc else 0
    n = int(pos.shape[1]) - n_prefix
    g = math.isqrt(n)
    if g * g != n:
        raise UserError(
            f"position table of {pos.shape[1]} tokens is not a square grid (+{n_prefix} class token)"
        )
    return g


@dataclass(frozen=True)
class EncoderRecord:
    """A ViT encoder: its timm ``VisionTransformer`` arguments and how it was trained. See the module docstring."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    in_chans: int = 3
    global_pool: str = "token"  # "token" (CLS after the final norm) or "avg" (mean of patch tokens + fc_norm)
    name: str | None = None  # the model it was trained as (mae_vit_base_patch8, vit_small_patch16), if known
    trainer: str | None = None  # "bootstrap" for `semmae bootstrap`'s teacher; None otherwise
    fg_keep: float | None = None  # share of the patches pretraining fed the encoder (patch-8 SemMAE: 0.25)

    # the timm VisionTransformer arguments (:meth:`arch`)
    ARCH_FIELDS: ClassVar[tuple[str, ...]] = (
        "img_size",
        "patch_size",
        "embed_dim",
        "depth",
        "num_heads",
        "mlp_ratio",
        "qkv_bias",
        "in_chans",
        "global_pool",
    )
    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")

    def __post_init__(self) -> None:
        if min(self.img_size, self.patch_size, self.embed_dim, self.depth, self.num_heads, self.in_chans) < 1:
            raise UserError(f"encoder sizes must be positive: {self.arch()}")
        if self.embed_dim % self.num_heads:
            raise UserError(f"num_heads {self.num_heads} does not divide embed_dim {self.embed_dim}")
        if self.img_size % self.patch_size:
            raise UserError(
                f"image size {self.img_size} is not a multiple of the patch size {self.patch_size}"
            )
        if self.global_pool not in ("token", "avg"):
            raise UserError(f"global_pool must be 'token' or 'avg', got {self.global_pool!r}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    def arch(self) -> dict[str, Any]:
        """The ``VisionTransformer`` arguments, as plain data."""
        return {k: getattr(self, k) for k in self.ARCH_FIELDS}

    def timm_name(self) -> str:
        """A timm-style name that encodes the real size: ``vit_base_patch16_224`` for a table size
        (:data:`VIT_SIZES`), else ``vit_d192x6h3_patch8_64`` (width x depth, heads); :func:`parse_arch` reads both."""
        dims = (self.embed_dim, self.depth, self.num_heads)
        size = next((s for s, d in VIT_SIZES.items() if d == dims), None)
        size = size or f"d{self.embed_dim}x{self.depth}h{self.num_heads}"
        return f"vit_{size}_patch{self.patch_size}_{self.img_size}"

    def timm_architecture(self) -> str:
        """A name registered in timm to build this encoder from: its own name when timm has it, else the standard
        ViT of the same width at patch 16 / 224 px (``vit_base_patch16_224`` for any other width); a timm
        ``config.json``'s ``model_args`` give the real shapes either way."""
        import timm

        name = self.timm_name()
        if timm.is_model(name):
            return name
        size = next((s for s in STANDARD_SIZES if VIT_SIZES[s][0] == self.embed_dim), "base")
        return f"vit_{size}_patch16_224"

    def export_facts(self) -> dict[str, Any]:
        """Everything an export writes about this encoder, read at once as plain data: ``record``
        (:meth:`to_dict`), ``timm_name``, ``timm_architecture``, ``grid`` and ``model_args`` (:meth:`arch`)."""
        return {
            "record": self.to_dict(),
            "timm_name": self.timm_name(),
            "timm_architecture": self.timm_architecture(),
            "grid": self.grid,
            "model_args": self.arch(),
        }

    def build(self, drop_path_rate: float = 0.0, dynamic_img_size: bool = False) -> VisionTransformer:
        """A timm ``VisionTransformer`` with ``num_classes=0`` (``forward`` returns pooled features [B, D])."""
        return VisionTransformer(
            **self.arch(),
            fc_norm=self.global_pool == "avg",
            num_classes=0,
            drop_path_rate=drop_path_rate,
            dynamic_img_size=dynamic_img_size,
        )

    def replace(self, **changes: Any) -> EncoderRecord:
        """A copy with ``changes`` (``None`` values ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # ------------------------------------------------------------------------------------------- plain data
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data, marked with the format and version."""
        return {"format": RECORD_FORMAT, "version": RECORD_VERSION, **dataclasses.asdict(self)}

    @staticmethod
    def is_record(data: Any) -> bool:
        return isinstance(data, dict) and data.get("format") == RECORD_FORMAT

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderRecord:
        """Read :meth:`to_dict`'s output back; unknown fields, a newer version or missing sizes are refused."""
        if not cls.is_record(data):
            raise UserError(
                f"not an encoder record (format {data.get('format')!r}, expected {RECORD_FORMAT!r})"
            )
        version = data.get("version")
        if not isinstance(version, int) or not 1 <= version <= RECORD_VERSION:
            raise UserError(
                f"encoder record version {version!r} is not readable by this semmae (reads 1..{RECORD_VERSION})"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        unknown = sorted(set(body) - fields)
        if unknown:
            raise UserError(f"encoder record has unknown field(s) {', '.join(unknown)}")
        return cls._checked(body, "encoder record")

    @classmethod
    def from_mae_config(cls, model_config: dict[str, Any], fg_keep: float | None = None) -> EncoderRecord:
        """The encoder of a ``model_config`` as ``semmae pretrain`` (``MaskedAutoencoder.config_dict()``) or
        ``semmae bootstrap`` store it: its encoder fields are read, the rest (decoder, loss, objective) ignored.
        A record dict (:meth:`to_dict`) is read as such."""
        if cls.is_record(model_config):
            record = cls.from_dict(model_config)
            return record.replace(fg_keep=fg_keep)
        fields = {f.name for f in dataclasses.fields(cls)}
        body = {k: v for k, v in model_config.items() if k in fields and v is not None}
        if fg_keep is not None:
            body["fg_keep"] = float(fg_keep)
        return cls._checked(body, "model_config")

    @classmethod
    def from_name(cls, name: str, img_size: int | None = None) -> EncoderRecord:
        """The plain ViT a name describes - ``vit_<size>_patch<p>[_<img>]`` (``mae_`` in front allowed; size from
        :data:`VIT_SIZES` or ``d<width>x<depth>h<heads>``, as :meth:`timm_name` writes it) - at ``img_size`` (else
        the name's, else 224). Other names (timm's DeiT-3, registers, ...) are refused: they are not plain ViTs."""
        sizes = "|".join(VIT_SIZES)
        if not re.fullmatch(rf"(mae_)?vit_({sizes}|d\d+x\d+h\d+)_patch\d+(_\d+)?", name):
            raise UserError(
                f"encoder architecture {name!r} is not a plain ViT name: use vit_<size>_patch<p>[_<img size>] "
                f"(sizes: {', '.join(VIT_SIZES)})"
            )
        sizes_of_name = parse_arch(name)
        return cls(**{"img_size": 224, **sizes_of_name, **({"img_size": img_size} if img_size else {})})

    @classmethod
    def _checked(cls, body: dict[str, Any], source: str) -> EncoderRecord:
        lacking = [k for k in cls.REQUIRED_FIELDS if k not in body]
        if lacking:
            raise UserError(f"{source} lacks the encoder size(s) {', '.join(lacking)}")
        return cls(**body)

    # ------------------------------------------------------------------------------------- from the weights
    @classmethod
    def from_state_dict(
        cls,
        enc: dict[str, torch.Tensor],
        *,
        num_heads: int | None = None,
        img_size: int | None = None,
        arch: str | None = None,
        hints: dict[str, Any] | None = None,
    ) -> tuple[EncoderRecord, str]:
        """Infer the record of a foreign encoder (timm key names, wrappers stripped) from its weights.

        Embedding dim, patch size, channels, depth, MLP ratio, qkv bias, pooling and the trained grid are in the
        weights; the heads are not: ``num_heads``, else ``hints["num_heads"]`` (a partial ``model_config``), else the ``arch`` name's (when its
        width matches), else the standard table (192->3, 384->6, 768->12, 1024->16, ...). The image size is
        ``img_size``, else ``hints["img_size"]``, else the position table's grid times the patch.

        Returns:
            ``(record, where num_heads came from)``.
        """
        w = enc.get("patch_embed.proj.weight")
        if w is None or w.ndim != 4:
            raise UserError(
                "the checkpoint has no 4-D 'patch_embed.proj.weight'; only ViT encoders are supported"
            )
        embed_dim, in_chans, patch_size = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
        block_ids = {int(m.group(1)) for k in enc if (m := re.match(r"blocks\.(\d+)\.", k))}
        if not block_ids:
            raise UserError("the checkpoint has no transformer blocks ('blocks.N.*' keys)")
        fc1 = enc.get("blocks.0.mlp.fc1.weight")
        grid = pos_grid(enc)
        hints = hints or {}
        named = parse_arch(arch) if arch else {}
        heads, source = num_heads, "argument"
        if heads is None and hints.get("num_heads") is not None:
            heads, source = int(hints["num_heads"]), "model_config"
        if heads is None and named.get("embed_dim") == embed_dim:
            heads, source = named["num_heads"], "arch name"
        if heads is None:
            heads, source = _HEADS_BY_DIM.get(embed_dim, max(1, embed_dim // 64)), "default table"
        if img_size is None:
            img_size = int(hints["img_size"]) if "img_size" in hints else (grid * patch_size if grid else 224)
        record = cls(
            img_size=int(img_size),
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=max(block_ids) + 1,
            num_heads=int(heads),
            mlp_ratio=float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0,
            qkv_bias="blocks.0.attn.qkv.bias" in enc,
            in_chans=in_chans,
            global_pool="avg" if ("fc_norm.weight" in enc and "norm.weight" not in enc) else "token",
        )
        return record, source


# ------------------------------------------------------------------------------ the record a config describes
def record_of(config: Any, fg_keep: float | None, source: str) -> EncoderRecord | None:
    """The record a ``model_config`` (or record dict, or ``VisionTransformer`` arguments) describes; None when it
    lacks the encoder sizes (or is not a dict). A checkpoint's record:
    :class:`semmae.models.checkpoint_schema.TrainState`."""
    if not isinstance(config, dict):
        return None
    if not EncoderRecord.is_record(config) and any(k not in config for k in EncoderRecord.REQUIRED_FIELDS):
        return None
    try:
        return EncoderRecord.from_mae_config(config, fg_keep)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None


# ------------------------------------------------------------------------- weights against their record
def misfits(
    target: dict[str, torch.Tensor], enc: dict[str, torch.Tensor], fresh: list[str] = ()
) -> list[str]:
    """What keeps ``enc`` from loading strictly into a model whose state dict is ``target``: missing keys (but
    ``fresh``), unexpected keys, shape differences - one phrase each, empty when it fits."""
    missing = sorted(k for k in target if k not in enc and k not in fresh)
    unexpected = sorted(k for k in enc if k not in target)
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in enc.items()
        if k in target and v.shape != target[k].shape
    ]
    parts = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
        if keys:
            parts.append(f"{label}: {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}")
    if shapes:
        parts.append(f"shape differences: {'; '.join(shapes[:10])}")
    return parts


def record_misfits(record: EncoderRecord, enc: dict[str, torch.Tensor]) -> list[str]:
    """:func:`misfits` against the encoder ``record`` describes, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        target = record.build().state_dict()
    return misfits(target, enc)


def vit_record(
    vit: VisionTransformer, what: str = "the encoder"
) -> tuple[EncoderRecord, dict[str, torch.Tensor]]:
    """The record and timm state dict (detached, contiguous copies) of a built timm ``VisionTransformer``, as built
    (its position table at its image size); a :class:`UserError` naming ``what`` when it is not a plain timm ViT."""
    sd = {k: v.detach().contiguous().clone() for k, v in vit.state_dict().items()}
    record, _ = EncoderRecord.from_state_dict(
        sd, num_heads=int(vit.blocks[-1].attn.num_heads), img_size=int(vit.patch_embed.img_size[0])
    )
    record = record.replace(global_pool=getattr(vit, "global_pool", None) or None)
    misfit = record_misfits(record, sd)
    if misfit:
        raise UserError(f"{what} is not a plain timm ViT: {'; '.join(misfit)}")
    return record, sd
