"""The hierarchical VAE and its likelihood."""

from vaezip.model.likelihood import LogisticMixture
from vaezip.model.vae import ForwardOutput, HierarchicalVAE, TopDownWalk, pad_to_stride

__all__ = ["ForwardOutput", "HierarchicalVAE", "LogisticMixture", "TopDownWalk", "pad_to_stride"]
