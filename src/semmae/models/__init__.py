"""The masked autoencoder (He et al. 2022) fed by external masks, and encoder checkpoint interop."""
