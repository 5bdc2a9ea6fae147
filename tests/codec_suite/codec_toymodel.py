"""A numpy toy hierarchical latent model implementing codec.protocol, for the codec tests.

Three groups, top-down (all deterministic float64, so encoder and decoder compute identical floats):
    z0: 2 global latents per tile        prior N(0, 1)                  posterior from the tile's mean and spread
    z1: one latent per stride x stride   prior N(0.8 z0[0], s(z0[1]))   posterior from the block's mean
    z2: one latent per block             prior N(0.3 z1, 0.5)           posterior from the block's spread
Pixels: a discretized logistic per pixel, mean from z1 (and, for channels > 0, the previous channel of the
same pixel: channel coupling), scale from z2. Posterior stds stay >= 0.08 (well above the latent grid step).
"""

from __future__ import annotations

import numpy as np

from codec.protocol import LatentParams

_EDGES = np.concatenate([[-np.inf], np.arange(255) + 0.5, [np.inf]])  # (257,) bin edges of 0..255


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def _to_unit(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) / 255.0 * 4.0 - 2.0  # uint8 -> [-2, 2]


class ToyModel:
    def __init__(self, channels: int = 3, stride: int = 2, post_std: float = 0.08) -> None:
        self.channels = channels
        self.stride = stride
        self.post_std = post_std  # the posterior std of z1: small values make latents expensive to pop

    def begin(self, shape: tuple[int, int, int, int], pixels: np.ndarray | None = None) -> "ToyPass":
        return ToyPass(self, tuple(shape), pixels)


class ToyPass:
    num_groups = 3

    def __init__(self, model: ToyModel, shape: tuple[int, int, int, int], pixels: np.ndarray | None) -> None:
        b, c, h, w = shape
        assert c == model.channels and h % model.stride == 0 and w % model.stride == 0
        self.model, self.shape = model, shape
        self.s = model.stride
        self.hb, self.wb = h // self.s, w // self.s
        self.z: list[np.ndarray | None] = [None] * 3
        self.features = None
        if pixels is not None:
            assert pixels.shape == shape and pixels.dtype == np.uint8
            x = _to_unit(pixels).mean(axis=1)  # (B, H, W)
            blocks = x.reshape(b, self.hb, self.s, self.wb, self.s)
            self.features = {
                "global": np.stack([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1),  # (B, 2)
                "block_mean": blocks.mean(axis=(2, 4)).reshape(b, -1),  # (B, hb * wb)
                "block_std": blocks.std(axis=(2, 4)).reshape(b, -1),  # (B, hb * wb)
            }

    def latent_params(self, group: int) -> LatentParams:
        assert all(z is not None for z in self.z[:group]), "groups out of order"
        b, d = self.shape[0], self.hb * self.wb
        if group == 0:
            prior = (np.zeros((b, 2)), np.ones((b, 2)))
        elif group == 1:
            z0 = self.z[0]
            mean, std = 0.8 * z0[:, :1], 0.5 * np.exp(0.3 * np.tanh(z0[:, 1:]))  # (B, 1) each
            prior = (np.repeat(mean, d, axis=1), np.repeat(std, d, axis=1))
        else:
            prior = (0.3 * self.z[1], np.full((b, d), 0.5))
        if self.features is None:
            return LatentParams(*prior)
        f = self.features
        if group == 0:
            post = (0.9 * f["global"], np.full((b, 2), 0.3))
        elif group == 1:
            post = (0.8 * f["block_mean"] + 0.2 * prior[0], np.full((b, d), self.model.post_std))
        else:
            post = (2.0 * f["block_std"] - 0.5, np.full((b, d), 0.2))
        return LatentParams(*prior, *post)

    def set_latent(self, group: int, values: np.ndarray) -> None:
        expected = (self.shape[0], 2 if group == 0 else self.hb * self.wb)
        assert values.shape == expected and values.dtype == np.float64, (values.shape, expected)
        self.z[group] = values

    def pixel_table(self, channel: int, pixels: np.ndarray) -> np.ndarray:
        assert all(z is not None for z in self.z)
        assert not pixels[:, channel:].any(), "channels >= channel must be zero"
        b, _, h, w = self.shape

        def up(z: np.ndarray) -> np.ndarray:  # (B, hb * wb) -> (B, H, W), nearest neighbour
            return np.repeat(np.repeat(z.reshape(b, self.hb, self.wb), self.s, axis=1), self.s, axis=2)

        mean = 127.5 + 63.75 * up(self.z[1]) + 2.0 * self.z[0][:, :1, None]  # (B, H, W)
        if channel > 0:  # colour coupling: lean towards the previous channel of the same pixel
            mean = 0.2 * mean + 0.8 * (pixels[:, channel - 1].astype(np.float64) + 10.0)
        scale = 1.0 + 6.0 * _sigmoid(up(self.z[2]))  # (B, H, W)
        cdf = _sigmoid((_EDGES - mean[..., None]) / scale[..., None])  # (B, H, W, 257)
        return np.diff(cdf, axis=-1).astype(np.float32)  # (B, H, W, 256)


def smooth_image(rng: np.random.Generator, channels: int, height: int, width: int, noise: float = 4.0) -> np.ndarray:
    """A (C, H, W) uint8 test image: a smooth random field, correlated channels, a little noise."""
    coarse = rng.normal(0.0, 50.0, size=(height // 8 + 2, width // 8 + 2))
    ys = np.linspace(0, coarse.shape[0] - 1.001, height)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    field = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )  # (H, W) bilinear upsampling
    planes = [128 + field + 10.0 * c + rng.normal(0.0, noise, size=(height, width)) for c in range(channels)]
    return np.clip(np.rint(np.stack(planes)), 0, 255).astype(np.uint8)  # (C, H, W)


class LinearToyModel:
    """A linear-Gaussian hierarchy whose posterior is (almost) exact, and which can sample its own data.

    Bits-back is only as good as the bits it pops: they look random when the latents pushed with the prior are
    distributed like the prior, i.e. when the aggregate posterior matches the prior. This holds here (images
    sampled from the model, near-exact posteriors), as it should for a well-trained VAE, so the coder's rate can
    be compared with the expected negative ELBO.

        z0: 2 per tile        N(0, 1)
        z1: 1 per block       N(a0 z0[0] + a1 z0[1] r_j, s1^2)        r_j = +1 top half of the tile, -1 bottom
        z2: 1 per block       N(b z1, s2^2)
        channel 0 pixel p:    logistic(127.5 + c1 z1_j + c2 g_p z2_j, scale)   g_p = +1 / -1 by column parity
        channel k > 0:        logistic(x_{k-1} + 5, scale)                     (colour coupling)
    Posteriors: z1, z2 given z0 are the exact Gaussian conditionals (logistic noise approximated by a Gaussian
    of the same variance); z0 is mean-field.
    """

    a0, a1, s1, b, s2, c1, c2, scale = 0.8, 0.5, 0.6, 0.5, 0.4, 20.0, 8.0, 2.0

    def __init__(self, channels: int = 3, stride: int = 2) -> None:
        self.channels, self.stride = channels, stride
        self.noise_var = (self.scale * np.pi / np.sqrt(3)) ** 2 + 1 / 12  # Gaussian stand-in for the noise

    def begin(self, shape, pixels=None):
        return LinearToyPass(self, tuple(shape), pixels)


class LinearToyPass:
    num_groups = 3

    def __init__(self, m: LinearToyModel, shape, pixels) -> None:
        self.m, self.shape = m, shape
        b, c, h, w = shape
        assert c == m.channels and h % m.stride == 0 and w % m.stride == 0
        s = m.stride
        self.hb, self.wb = h // s, w // s
        self.n = s * s  # pixels of channel 0 per block
        rows = np.arange(self.hb)
        self.r = np.repeat(np.where(rows < self.hb / 2, 1.0, -1.0), self.wb)  # (D,)
        self.g = np.where(np.arange(w) % 2 == 0, -1.0, 1.0)[None, None, :].repeat(h, axis=1)  # (1, H, W)
        g_blocks = self.g[0].reshape(self.hb, s, self.wb, s)
        self.sum_g = g_blocks.sum(axis=(1, 3)).reshape(-1)  # (D,)
        self.sum_g2 = (g_blocks**2).sum(axis=(1, 3)).reshape(-1)  # (D,)
        self.z: list[np.ndarray | None] = [None] * 3
        self.y = None
        if pixels is not None:
            y = pixels[:, 0].astype(np.float64) - 127.5  # (B, H, W)
            blocks = y.reshape(b, self.hb, s, self.wb, s)
            gy = (y * self.g).reshape(b, self.hb, s, self.wb, s)
            self.sum_y = blocks.sum(axis=(2, 4)).reshape(b, -1)  # (B, D)
            self.sum_gy = gy.sum(axis=(2, 4)).reshape(b, -1)  # (B, D)
            self.y = y

    def _prior(self, group):
        m, b, d = self.m, self.shape[0], self.hb * self.wb
        if group == 0:
            return np.zeros((b, 2)), np.ones((b, 2))
        if group == 1:
            z0 = self.z[0]
            return m.a0 * z0[:, :1] + m.a1 * z0[:, 1:] * self.r, np.full((b, d), m.s1)
        return m.b * self.z[1], np.full((b, d), m.s2)

    def _block_posterior(self):
        """Exact joint Gaussian of (z1_j, z2_j) given z0 and the pixels: precision matrix entries and mean."""
        m = self.m
        v = m.noise_var
        prior1, _ = self._prior(1)
        l11 = 1 / m.s1**2 + m.b**2 / m.s2**2 + self.n * m.c1**2 / v
        l12 = -m.b / m.s2**2 + m.c1 * m.c2 * self.sum_g / v  # (D,)
        l22 = 1 / m.s2**2 + m.c2**2 * self.sum_g2 / v  # (D,)
        h1 = prior1 / m.s1**2 + m.c1 * self.sum_y / v  # (B, D)
        h2 = m.c2 * self.sum_gy / v  # (B, D)
        det = l11 * l22 - l12**2
        mean1, mean2 = (l22 * h1 - l12 * h2) / det, (l11 * h2 - l12 * h1) / det
        return mean1, mean2, l11, l12, l22, det

    def latent_params(self, group):
        assert all(z is not None for z in self.z[:group])
        prior = self._prior(group)
        if self.y is None:
            return LatentParams(*prior)
        m, b = self.m, self.shape[0]
        if group == 0:  # mean-field over the two z0: block sums regress on (a0, a1 r_j)
            tau2 = m.s1**2 + (m.s2 * m.c2) ** 2 * 0 + m.noise_var / (self.n * m.c1**2)
            ybar = self.sum_y / (self.n * m.c1)  # (B, D)
            f = np.stack([np.full_like(self.r, m.a0), m.a1 * self.r])  # (2, D)
            prec = 1 + (f**2).sum(axis=1) / tau2  # (2,)
            mean = (ybar @ f.T) / tau2 / prec  # (B, 2)
            return LatentParams(*prior, mean, np.broadcast_to(1 / np.sqrt(prec), (b, 2)).copy())
        mean1, mean2, l11, l12, l22, det = self._block_posterior()
        if group == 1:
            return LatentParams(*prior, mean1, np.broadcast_to(np.sqrt(l22 / det), mean1.shape).copy())
        # z2 | z1: conditional of the joint Gaussian
        mean = mean2 - l12 / l22 * (self.z[1] - mean1)
        return LatentParams(*prior, mean, np.broadcast_to(1 / np.sqrt(l22), mean.shape).copy())

    def set_latent(self, group, values):
        self.z[group] = values

    def pixel_table(self, channel, pixels):
        m = self.m
        b, _, h, w = self.shape
        if channel == 0:
            def up(z):  # (B, D) -> (B, H, W)
                return np.repeat(np.repeat(z.reshape(b, self.hb, self.wb), m.stride, axis=1), m.stride, axis=2)

            mean = 127.5 + m.c1 * up(self.z[1]) + m.c2 * self.g * up(self.z[2])
        else:
            mean = pixels[:, channel - 1].astype(np.float64) + 5.0
        cdf = _sigmoid((_EDGES - mean[..., None]) / m.scale)  # (B, H, W, 257)
        return np.diff(cdf, axis=-1).astype(np.float32)


def sample_tiles(model, rng: np.random.Generator, b: int, h: int, w: int) -> np.ndarray:
    """(B, C, H, W) uint8 tiles drawn from the model: latents from the priors, pixels from the tables."""
    shape = (b, model.channels, h, w)
    batch = model.begin(shape)
    for g in range(batch.num_groups):
        p = batch.latent_params(g)
        batch.set_latent(g, p.prior_mean + p.prior_std * rng.normal(size=p.prior_mean.shape))
    pixels = np.zeros(shape, np.uint8)
    for c in range(model.channels):
        cdf = np.cumsum(batch.pixel_table(c, pixels).astype(np.float64), axis=-1)  # (B, H, W, 256)
        u = rng.random((b, h, w, 1)) * cdf[..., -1:]
        pixels[:, c] = np.minimum((cdf < u).sum(axis=-1), 255)
    return pixels


def mc_neg_elbo_bits(model, tiles, rng: np.random.Generator, step: float = 2.0**-8) -> float:
    """Monte-Carlo estimate of the expected negative ELBO of `tiles` (one fresh posterior sample per tile, on
    the latent grid): the bound that bits-back coding should reach, with independent random samples."""
    from codec.latents import gaussian_kl_bits

    total = 0.0
    for tile in tiles:
        pixels = tile.pixels[None]
        h, w = tile.valid
        batch = model.begin(pixels.shape, pixels)
        for g in range(batch.num_groups):
            p = batch.latent_params(g)
            z = np.round((p.post_mean + p.post_std * rng.normal(size=p.post_mean.shape)) / step) * step
            total += gaussian_kl_bits(p.post_mean, p.post_std, p.prior_mean, p.prior_std).sum()
            batch.set_latent(g, z)
        for c in range(pixels.shape[1]):
            seen = pixels.copy()
            seen[:, c:] = 0
            table = batch.pixel_table(c, seen)[0, :h, :w].astype(np.float64)  # (h, w, 256)
            x = pixels[0, c, :h, :w]
            prob = np.take_along_axis(table, x[..., None].astype(np.intp), axis=-1)[..., 0] / table.sum(axis=-1)
            total += -np.log2(np.maximum(prob, 2.0**-24)).sum()
    return total


def context_of(image: np.ndarray, top: int, left: int, height: int, width: int, which: str):
    """codec.predictive.Context: the pixels of `image` (C, H, W) above / left of / above-left of the tile at
    (top, left), as `which` ("", "above", "left", "above+left") names them."""
    from codec import predictive

    above = image[:, top - 1, left : left + width] if "above" in which else None
    beside = image[:, top : top + height, left - 1] if "left" in which else None
    corner = image[:, top - 1, left - 1] if above is not None and beside is not None else None
    return predictive.Context(above, beside, corner)


def recorded_with_staged_numbers(distribution: str, profile: str, tile: np.ndarray, context):
    """predictive.record_adaptive of a fresh state's `distribution` (a profile of the staged cascade, its numbers
    predictive.`profile`) with the staged cascade's numbers and the cascade's tables standing in for its own: what
    the profile does apart from its numbers and tables."""
    import pytest

    from codec import predictive

    shipped = predictive._table_file
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictive, profile, predictive.staged_profile())
        patch.setattr(predictive, "_table_file",
                      lambda tables: shipped(predictive.CASCADE if tables == distribution else tables))
        predictive.clear_table_caches()
        try:
            return predictive.record_adaptive(tile, context, predictive.AdaptiveState(), distribution)
        finally:
            predictive.clear_table_caches()  # the next coding reads the shipped tables again


def assert_sections_decode_only_as_their_kind(tiles, runs, kind, others) -> None:
    """The tiles (codec.tiling.Tile, raster order) priced and coded in sections of `kind` (`runs`: their tile
    counts) decode to their pixels; their words popped as each of `others` are refused or decode to other pixels,
    never silently right."""
    from codec import bitsback
    from codec.ans import Stack
    from codec.errors import CodingError

    priced = bitsback.price_sections(tiles, runs=runs, kinds=[kind])
    assert {price[0] for price in priced} == {kind}
    stack = Stack()
    schedule, _ = bitsback.encode_tiles(stack, tiles, None, model_bits=[float("inf")] * len(tiles), priced=priced)
    assert schedule == [(kind, n) for n in runs]
    specs = [tile.spec for tile in tiles]
    for tile, pixels in zip(tiles, bitsback.decode(stack.words(), schedule, specs, None)):
        np.testing.assert_array_equal(pixels, tile.pixels)
    for other in others:
        try:
            wrong = bitsback.decode(stack.words(), [(other, n) for n in runs], specs, None)
        except CodingError:
            continue
        assert any(not np.array_equal(got, tile.pixels) for got, tile in zip(wrong, tiles))
