"""``semmae bootstrap``: a semantic part encoder by iBOT-style self-distillation on the user's own images.

The paper learns parts on a frozen iBOT ViT-S/16 (Sec. 3.1) because self-distilled attention is semantic. This
stage trains such an encoder from scratch on any ImageFolder (Zhou et al. 2022, iBOT; Caron et al. 2021, DINO):
a student ViT and its EMA teacher, multi-crop views, a projection head with centring and sharpening, and the
masked-patch distillation loss (``--no-ibot`` leaves plain DINO). See ``docs/bootstrap.md``.
"""
