"""Semantic segmentation transfer: UPerNet on a ViT encoder (paper Table 7)."""
