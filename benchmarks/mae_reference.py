"""A plain MAE pretraining step to time semmae's against, and the FLOP count of one MAE step (for MFU).

``ReferenceMAE`` follows the structure of facebookresearch/mae's ``models_mae.py`` (He et al., CVPR 2022): timm
``PatchEmbed`` and ``Block`` s, fixed 2-D sin-cos position tables with a zero row for the class token, per-image
random masking by an argsort of uniform noise, the encoder on the kept patches plus the class token, a lighter
decoder over kept and mask tokens, and the loss on the masked patches against per-patch normalised pixels
(``norm_pix_loss``). Written here, not copied; it reads nothing from semmae, so it is the independent side of the
comparison in ``benchmarks/gpu_validate.py`` (section ``reference``).

``ReferenceStep`` is the release's training step without its extras: autocast forward, backward, AdamW
(betas 0.9/0.95, no weight decay on biases and norms, PyTorch's default implementation: foreach on CUDA, not
fused) and, for fp16, a grad scaler. The release's loop also reads the loss back (``loss.item()``) and calls
``torch.cuda.synchronize()`` every step; ``mae_loop_syncs=True`` adds both (reported beside, not in the ratio).

:func:`mae_step_flops` counts the matrix products of one pretraining step: the patch projection of the patches in
the model, the encoder on the kept tokens plus the class token, the decoder embedding, the decoder on every patch
plus the class token and the pixel prediction, each forward product times 3 for forward + backward (the input
gradient and the weight gradient cost one forward each), attention included (``QK^T`` and ``AV``: ``4 T^2 D`` per
block). One exception: the patch projection's input is the image, which needs no gradient, so it counts twice,
not three times (0.6 % of a ViT-B/16 step). Element-wise work (norms, softmax, GELU, the loss, the optimiser) is
not counted, as in every MFU figure. ``tests/benchmarks/test_mae_reference.py`` checks it against
``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

#: encoder (width, depth, heads) and decoder (width, depth, heads) of the sizes the benchmark uses; ``micro`` is
#: semmae's test size (32 px, patch 8), for the CPU smoke run
REFERENCE_SIZES: dict[str, dict[str, int]] = {
    "micro": dict(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    ),
    "base": dict(
        embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16
    ),
    "large": dict(
        embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16
    ),
}

#: vendor peak dense (no sparsity) bf16 tensor-core TFLOPS: NVIDIA's H100 SXM and H200 datasheets (989.5; the
#: 1,979 they also print is with 2:4 sparsity) and A100 (312); the denominator of the MFU figures
PEAK_BF16_DENSE_TFLOPS = {"H100 SXM": 989.0, "H200": 989.0, "A100": 312.0}


def peak_bf16_tflops(device_name: str) -> tuple[str, float] | None:
    """``(table key, TFLOPS)`` for a ``torch.cuda.get_device_name()``, or None for a GPU not in the table. An H100
    that is not named PCIe or NVL is the SXM part (``NVIDIA H100 80GB HBM3``)."""
    name = device_name.upper()
    if "H200" in name:
        return "H200", PEAK_BF16_DENSE_TFLOPS["H200"]
    if "H100" in name and "PCIE" not in name and "NVL" not in name:
        return "H100 SXM", PEAK_BF16_DENSE_TFLOPS["H100 SXM"]
    if "A100" in name:
        return "A100", PEAK_BF16_DENSE_TFLOPS["A100"]
    return None


def kept_patches(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per image: ``num_patches`` less ``round(mask_ratio * num_patches)`` masked ones."""
    return num_patches - int(round(mask_ratio * num_patches))


def mae_step_flops(
    img_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    decoder_embed_dim: int,
    decoder_depth: int,
    mlp_ratio: float = 4.0,
    mask_ratio: float = 0.75,
    in_chans: int = 3,
    fg_keep: float = 1.0,
    batch: int = 1,
) -> int:
    """FLOPs (2 per multiply-add) of one MAE pretraining step (forward + backward) on ``batch`` images.

    ``fg_keep < 1``: only the most-foreground ``round(fg_keep * L)`` patches enter the model (semmae's ViT-B/8
    setting): they are the model's patches, of which ``mask_ratio`` are masked. See the module docstring for what
    is counted."""
    grid = img_size // patch_size
    patches = grid * grid
    if fg_keep < 1:
        patches = max(1, int(round(fg_keep * patches)))
    pixels = patch_size * patch_size * in_chans
    d, dd = embed_dim, decoder_embed_dim
    enc_tokens = kept_patches(patches, mask_ratio) + 1  # + the class token
    dec_tokens = patches + 1

    def block(t: int, w: int) -> int:
        hidden = int(w * mlp_ratio)
        linear = 2 * t * w * (3 * w) + 2 * t * w * w + 2 * (2 * t * w * hidden)  # qkv, proj, fc1 + fc2
        attention = 2 * (2 * t * t * w)  # Q K^T and A V over all heads
        return linear + attention

    embed = 2 * patches * pixels * d
    rest = (
        depth * block(enc_tokens, d)
        + 2 * enc_tokens * d * dd  # decoder_embed
        + decoder_depth * block(dec_tokens, dd)
        + 2 * dec_tokens * dd * pixels  # decoder_pred
    )
    return batch * (2 * embed + 3 * rest)


def sincos_table(dim: int, grid: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos positions ``[1, (1 +) grid^2, dim]``: half the channels encode the row, half the
    column, each as sines and cosines of the position at ``dim / 4`` frequencies ``1 / 10000^(k / (dim/4))``; a
    zero row first for the class token."""
    if dim % 4:
        raise ValueError(f"the sin-cos table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def encode(pos: Tensor) -> Tensor:
        angle = pos.flatten().double()[:, None] * freq[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1).float()
    if cls_token:
        table = torch.cat([torch.zeros(1, dim), table])
    return table[None]


class ReferenceMAE(nn.Module):
    """A masked autoencoder as facebookresearch/mae builds it; ``forward(imgs, mask_ratio)`` draws its own mask
    and returns ``(loss, pred, mask)``."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_size, self.in_chans, self.norm_pix_loss = patch_size, in_chans, norm_pix_loss
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_table(embed_dim, grid), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)
        )
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_table(decoder_embed_dim, grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
        self._init()

    def _init(self) -> None:
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # the patch projection initialised as a Linear
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, imgs: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, L, p*p*C]``, each patch's pixels in (row, column, channel) order."""
        b, c, h, w = imgs.shape
        p = self.patch_size
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    @staticmethod
    def random_masking(x: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        """Keep a random subset of each row of ``x [B, L, D]``: the patches with the smallest uniform noise.
        Returns the kept tokens, the mask (1 = masked, in the original order) and the order that undoes the
        shuffle."""
        b, length, dim = x.shape
        keep = kept_patches(length, mask_ratio)
        noise = torch.rand(b, length, device=x.device)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        kept = torch.gather(x, 1, shuffle[:, :keep, None].expand(-1, -1, dim))
        mask = torch.ones(b, length, device=x.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, restore), restore

    def forward_encoder(self, imgs: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x, mask, restore = self.random_masking(x, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, restore

    def forward_decoder(self, latent: Tensor, restore: Tensor) -> Tensor:
        x = self.decoder_embed(latent)
        b, length = restore.shape
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, length + 1 - x.shape[1], -1)], dim=1)
        tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, imgs: Tensor, mask_ratio: float = 0.75) -> tuple[Tensor, Tensor, Tensor]:
        latent, mask, restore = self.forward_encoder(imgs, mask_ratio)
        pred = self.forward_decoder(latent, restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


def reference_model(size: str, img_size: int | None = None, patch_size: int | None = None) -> ReferenceMAE:
    """A :data:`REFERENCE_SIZES` model (``img_size`` 224 and ``patch_size`` 16 unless the size fixes them)."""
    kw = {"img_size": 224, "patch_size": 16, **REFERENCE_SIZES[size]}
    kw.update({k: v for k, v in (("img_size", img_size), ("patch_size", patch_size)) if v is not None})
    return ReferenceMAE(**kw)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """MAE's two groups: matrices and kernels decayed; biases, norms and the tokens (1-D or ``*_token``) not."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if p.ndim <= 1 or name.endswith(".bias") or name.endswith("_token") else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=plain, weight_decay=0.0)]


class ReferenceStep:
    """One training step of :class:`ReferenceMAE` as facebookresearch/mae's ``engine_pretrain`` takes it (see the
    module docstring). ``precision``: ``bf16``, ``fp16`` (with a grad scaler) or ``fp32``."""

    def __init__(
        self,
        model: ReferenceMAE,
        device: torch.device | str,
        precision: str = "bf16",
        batch_size: int = 256,
        blr: float = 1.5e-4,
        weight_decay: float = 0.05,
        mask_ratio: float = 0.75,
        mae_loop_syncs: bool = False,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        lr = blr * batch_size / 256  # MAE's linear scaling rule
        self.optimizer = torch.optim.AdamW(weight_decay_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95))
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.mask_ratio, self.mae_loop_syncs = mask_ratio, mae_loop_syncs

    def __call__(self, imgs: Tensor) -> Tensor:
        with torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        ):
            loss, _, _ = self.model(imgs, self.mask_ratio)
        if self.mae_loop_syncs and not math.isfinite(loss.item()):  # the release stops on a non-finite loss
            raise RuntimeError(f"loss is {loss.item()}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.mae_loop_syncs and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return loss.detach()
