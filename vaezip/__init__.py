"""vaezip: neural lossless image compression with hierarchical VAEs and bits-back ANS coding."""
__version__ = "0.1.0"
