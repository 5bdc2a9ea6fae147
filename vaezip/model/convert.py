"""Turn a colour model into a grey one that assigns a grey image exactly the probabilities the colour model
gives the red channel of that image repeated in R, G and B: a trained starting point for grey photographs."""

from __future__ import annotations

import dataclasses

import torch

from vaezip.model.vae import HierarchicalVAE


@torch.no_grad()
def grey_from_colour(colour: HierarchicalVAE) -> HierarchicalVAE:
    config = colour.config
    if config.image_channels != 3:
        raise ValueError(f"grey_from_colour needs a 3-channel model, got {config.image_channels}")
    if config.pixel_context:
        raise ValueError("grey_from_colour cannot convert a pixel-context head: start from a model without one")
    dtype = next(colour.parameters()).dtype
    grey = HierarchicalVAE(dataclasses.replace(config, image_channels=1, channel_coupling=True)).to(dtype)
    state = {key: value.clone() for key, value in colour.state_dict().items()}

    # pixel_unshuffle orders the stem's inputs channel-major (c * f*f + sub-position), so a grey input equal
    # to R = G = B sees the sum of the three colour channels' weights.
    subpositions = config.stem_factor**2
    stem = state["encoder.stem.weight"]  # out, 3 * f*f, 3, 3
    state["encoder.stem.weight"] = stem.reshape(stem.shape[0], 3, subpositions, *stem.shape[2:]).sum(1)

    # Keep the head outputs of the red channel: its marginal is the grey likelihood.
    if config.likelihood in ("gaussian", "gaussian-optimal"):  # outputs: one mean per channel
        keep = torch.tensor([0])
        if config.likelihood == "gaussian":  # the shared sigmas are parameters
            state["likelihood.log_sigma"] = state["likelihood.log_sigma"][:1]
    elif config.likelihood == "categorical":  # outputs: 256 logits per channel, channel-major
        keep = torch.arange(256)
    else:
        # logits (K), means (K x 3), log-scales (K x 3), coupling coefficients (3K, where coupled): the logits
        # and red's means and scales (red is never shifted by another channel).
        k = config.num_mixtures
        red_means = torch.arange(k) * 3 + k
        keep = torch.cat([torch.arange(k), red_means, red_means + 3 * k])
    state["decoder.head.weight"] = state["decoder.head.weight"][:, keep]  # in, out, f, f
    state["decoder.head.bias"] = state["decoder.head.bias"][keep]
    grey.load_state_dict(state, strict=True)
    return grey.eval()
