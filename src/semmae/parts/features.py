"""Frozen-encoder tokens computed once per image and view, reused by every epoch of part learning (Sec. 3.1).

The part-learning encoder is frozen (paper Sec. 4.1: "The parameters of the ViT-based encoder are fixed"), so its
class token ``F_c`` and patch tokens ``F`` depend only on the input view. With ``parts train --features cached``
the views are the whole image and its horizontal flip; both are encoded once at the start of the run and every
optimiser step then costs only the part head and the decoder. This is what makes hundreds of part-learning steps
affordable on a CPU (benchmarks/bench_parts.py measures the step with and without the encoder). The price is the
augmentation: no random crops (``--features online`` keeps RandomResizedCrop + flip and runs the encoder every
step, the setting for large datasets whose tokens do not fit in memory).

Memory: per image ``3 S^2`` bytes (uint8 pixels) + ``2 (L + 1) D`` half-precision values (two views' tokens);
:func:`feature_cache_bytes` gives the total and :class:`FeatureCache` refuses to build past a limit. Under DDP every
rank encodes the whole set (the tokens are then sharded per epoch, not per rank), which suits the small and medium
sets this mode is for.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torchvision.transforms import v2
from tqdm import tqdm

from semmae.data.folder import ImageFolderDataset
from semmae.data.loader import DataLoader
from semmae.data.transforms import normalize_batch
from semmae.engine.precision import Precision
from semmae.errors import UserError
from semmae.parts.encoder import FrozenEncoder

TOKEN_DTYPE = torch.float16


def uint8_image_transform(img_size: int) -> v2.Compose:
    """PIL image -> uint8 [3, S, S], whole image resized (the geometry of :func:`full_image_transform`)."""
    return v2.Compose([v2.ToImage(), v2.Resize((img_size, img_size), antialias=True)])


def feature_cache_bytes(num_images: int, img_size: int, num_tokens: int, embed_dim: int) -> int:
    """Bytes held by a :class:`FeatureCache`: pixels + class and patch tokens of two views."""
    token_bytes = torch.finfo(TOKEN_DTYPE).bits // 8
    return num_images * (3 * img_size * img_size + 2 * (num_tokens + 1) * embed_dim * token_bytes)


@dataclass
class FeatureCache:
    """Pixels ``images`` uint8 [N, 3, S, S] and tokens of the two views (0 = as is, 1 = flipped):
    ``cls`` [2, N, D] and ``patches`` [2, N, L, D] in half precision."""

    images: torch.Tensor
    cls: torch.Tensor
    patches: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        encoder: FrozenEncoder,
        dataset: ImageFolderDataset,
        batch_size: int,
        num_workers: int,
        device: torch.device,
        max_bytes: int,
        progress: bool = True,
        precision: Precision | None = None,
    ) -> FeatureCache:
        """Encode every image of ``dataset`` (whose transform must give uint8 [3, S, S]) and its flip, under
        ``precision``'s autocast (the run's; None = float32)."""
        need = feature_cache_bytes(len(dataset), encoder.img_size, encoder.grid_size**2, encoder.embed_dim)
        if need > max_bytes:
            raise UserError(
                f"--features cached would hold {need / 2**30:.1f} GiB of tokens for {len(dataset)} images, "
                f"over --feature-cache-gb {max_bytes / 2**30:g}: raise the limit or use --features online"
            )
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        images, cls_tok, patch_tok = [], [[], []], [[], []]
        for batch in tqdm(loader, desc="encoding images once", disable=not progress, dynamic_ncols=True):
            raw = batch["image"]
            images.append(raw)
            x = normalize_batch(raw.to(device, non_blocking=True))
            for view, inp in enumerate((x, x.flip(-1))):
                with precision.autocast() if precision is not None else contextlib.nullcontext():
                    feats = encoder(inp)
                cls_tok[view].append(feats["cls"].to("cpu", TOKEN_DTYPE))
                patch_tok[view].append(feats["patches"].to("cpu", TOKEN_DTYPE))
        return cls(
            images=torch.cat(images),
            cls=torch.stack([torch.cat(c) for c in cls_tok]),
            patches=torch.stack([torch.cat(p) for p in patch_tok]),
        )

    def subset(self, index: torch.Tensor) -> FeatureCache:
        """The images ``index`` long [K] (both views)."""
        return FeatureCache(self.images[index], self.cls[:, index], self.patches[:, index])

    def batch(
        self, index: torch.Tensor, flip: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (normalised float [B, 3, S, S], flipped where ``flip``), ``F_c`` [B, D] and ``F`` [B, L, D]
        (float32) for image indices ``index`` long [B] and views ``flip`` bool [B]."""
        view = flip.long()
        images = normalize_batch(self.images[index].to(device))
        images = torch.where(flip.to(device).view(-1, 1, 1, 1), images.flip(-1), images)
        f_c = self.cls[view, index].to(device, torch.float32)
        f = self.patches[view, index].to(device, torch.float32)
        return images, f_c, f
