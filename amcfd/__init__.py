"""AM-CFD: self-supervised real-world image denoising (AMSNet, coarse-to-fine distillation, peers)."""
__version__ = "0.1.0"
