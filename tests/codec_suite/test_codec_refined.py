"""Formats 21 and 22's refinements (codec/kernels.py: "the refinement"; codec/predictive.py: REFINED, and
REFINED_ACROSS and SMALL_ACROSS; codec/tilekinds.py: PREDICTIVE_REFINED_SECTIONS, and PREDICTIVE_ACROSS_SECTIONS and
PREDICTIVE_SMALL_ACROSS_SECTIONS): the photograph (or small-image) profile's values coded as binary decisions refined
by an adaptive integer model, carried through a section."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from codec_toymodel import assert_sections_decode_only_as_their_kind, smooth_image

from codec import bitsback, kernels, predictive
from codec.ans import Stack
from codec.bitsback import PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_PHOTO_SECTIONS, PREDICTIVE_REFINED_SECTIONS
from codec.tiling import split_tiles

REFINEMENTS = pytest.mark.parametrize("distribution", predictive.REFINEMENTS)


def coded(tiles, contexts, distribution):
    """The tiles (C, h, w) recorded in pop order with one state, pushed last first: (stack, recordings)."""
    state, recorded = predictive.AdaptiveState(), []
    for tile, context in zip(tiles, contexts):
        recorded.append(predictive.record_adaptive(tile, context, state, distribution))
    stack = Stack()
    for one in reversed(recorded):
        predictive.push_rows(stack, one)
    return stack, recorded


def noisy_crop(seed: int, channels: int = 3) -> np.ndarray:
    """A smooth image with noise of a few levels (C, 24, 40) uint8: residuals beyond 4 too."""
    rng = np.random.default_rng(seed)
    image = smooth_image(rng, channels, 24, 40).astype(np.int64)
    image += rng.integers(-3, 4, image.shape)
    image[:, 5, 7] = 255 - image[:, 5, 7]  # far from any prediction: the rest's symbol
    return np.clip(image, 0, 255).astype(np.uint8)


@REFINEMENTS
@pytest.mark.parametrize("channels", [1, 3])
def test_refined_tiles_decode_with_the_state_carried_through(channels, distribution):
    """Three tiles, each with context from the one before, coded with one state and decoded with another: the same
    pixels, the stack emptied; the refinement's model lives in the state (made by the first tile) and moves."""
    image = noisy_crop(channels, channels)
    tiles = [np.ascontiguousarray(image[:, :, :20]), np.ascontiguousarray(image[:, :, 20:]),
             np.ascontiguousarray(image[:, :12, :20])]
    contexts = [predictive.Context(), predictive.Context(left=image[:, :, 19]), predictive.Context()]
    stack, recorded = coded(tiles, contexts, distribution)
    assert all(one.decisions is not None and one.decisions.shape[1] >= one.values.size for one in recorded)
    start, frequency = recorded[0].decisions
    assert (frequency > 0).all() and (start + frequency <= 1 << 24).all()
    # a binary decision's zero starts at 0, its one ends at 2**24; a rest's symbol (|r| > 4) lies between
    assert ((start > 0) & (start + frequency < 1 << 24)).any()
    state = predictive.AdaptiveState()
    for tile, context in zip(tiles, contexts):
        np.testing.assert_array_equal(predictive.decode(stack, *tile.shape, context, distribution, state), tile)
    assert stack.is_empty()
    assert state.refinement is not None
    groups = kernels.REFINE_WIDEST if distribution in predictive.ACROSS else kernels.REFINE_GROUPS
    assert state.refinement.counters.shape == (groups, kernels.REFINE_SLOTS)
    assert ((state.refinement.counters & 255) > 0).any(axis=1).all()  # every group counted


@REFINEMENTS
def test_the_plain_python_forms_code_the_compiled_forms_bits(monkeypatch, distribution):
    """Without numba the kernels run as plain Python: the same decisions and the same words as compiled."""
    tile = noisy_crop(7)[:, :8, :12].copy()
    compiled_stack, compiled_recorded = coded([tile], [predictive.Context()], distribution)
    for name, function in kernels.PYTHON_FORMS.items():
        monkeypatch.setitem(kernels.__dict__, name, function)
    monkeypatch.setattr(kernels, "always", lambda: kernels.PYTHON_FORMS)
    plain_stack, plain_recorded = coded([tile], [predictive.Context()], distribution)
    np.testing.assert_array_equal(plain_recorded[0].decisions, compiled_recorded[0].decisions)
    np.testing.assert_array_equal(plain_stack.words(), compiled_stack.words())
    state = predictive.AdaptiveState()
    np.testing.assert_array_equal(predictive.decode(Stack.from_words(compiled_stack.words()), *tile.shape,
                                                    predictive.Context(), distribution, state), tile)


def test_refined_sections_take_the_photograph_profiles_place_where_format_21_or_22_may_be_written(monkeypatch):
    """The encoder codes in format 22's refined sections where it coded format 20's photograph sections, in format 21's
    where 21 is the newest allowed; format 20 (and older) never; a section's words popped as another kind are refused
    or decode to other pixels."""
    monkeypatch.setattr(bitsback, "PHOTO_PROFILE_VALUES", 100)
    rng = np.random.default_rng(4)
    tiles = split_tiles(smooth_image(rng, 3, 48, 40), 16, 2)
    assert bitsback.section_kinds(tiles) == (PREDICTIVE_ACROSS_SECTIONS, bitsback.PREDICTIVE_SMALL_ACROSS_SECTIONS)
    assert bitsback.section_kinds(tiles, bitsback.SECTION_KINDS[:4])[0] == PREDICTIVE_REFINED_SECTIONS
    assert not {PREDICTIVE_REFINED_SECTIONS, PREDICTIVE_ACROSS_SECTIONS} & set(
        bitsback.section_kinds(tiles, bitsback.SECTION_KINDS[:3]))
    for kind, other in ((PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_REFINED_SECTIONS),
                        (PREDICTIVE_REFINED_SECTIONS, PREDICTIVE_PHOTO_SECTIONS)):
        assert_sections_decode_only_as_their_kind(tiles, [6, 3], kind, [other])


def test_the_refinement_across_channels_codes_a_photograph_in_fewer_bits():
    """samples/hopper.png (256x256 colour) as one tile: format 22's refinement, which also reads where the earlier
    channels' gradients put each value, codes it in fewer bits than format 21's (~1.7 % fewer; Kodak's photographs
    ~10 %), its grey version in about as many."""
    with Image.open(Path(__file__).parents[2] / "samples" / "hopper.png") as opened:
        colour = np.ascontiguousarray(np.asarray(opened.convert("RGB")).transpose(2, 0, 1))
        grey = np.asarray(opened.convert("L"))[None].copy()

    def bits(image, distribution):
        recorded = predictive.record_adaptive(image, predictive.Context(), predictive.AdaptiveState(), distribution)
        return -np.log2(recorded.decisions[1].astype(np.float64) / 2**24).sum()

    assert bits(colour, predictive.REFINED_ACROSS) < 0.99 * bits(colour, predictive.REFINED)
    assert abs(bits(grey, predictive.REFINED_ACROSS) / bits(grey, predictive.REFINED) - 1) < 0.01


def test_every_context_has_a_counter_of_its_own_inside_its_group():
    """The compiled kernels check no index: each group's context (the decision's key, the value's own part) must
    give a slot inside the group's counters, and two contexts never one slot (kernels.REFINE_KEYS and RADICES). The
    value's parts, over frames at their extremes (values 0 and 255, residuals of +-255, every table), stay below their
    radices; the slots of all keys and parts are distinct."""
    contexts = kernels.PLAIN_FORMS["_refine_contexts"]
    rng = np.random.default_rng(3)
    width, height = 7, 5
    largest = np.zeros(kernels.REFINE_WIDEST, np.int64)
    tails = np.zeros(kernels.REFINE_WIDEST, np.int64)
    for trial in range(400):
        extremes = rng.integers(0, 2, (3, width * height + 1)) * 255
        frame = np.where(rng.random(extremes.shape) < 0.5, extremes, rng.integers(0, 256, extremes.shape))
        frame = frame.astype(np.float64)
        residual = np.where(rng.random(frame.shape) < 0.5, rng.choice([-255, 255], frame.shape),
                            rng.integers(-255, 256, frame.shape)).astype(np.int64)
        at, channel = int(rng.integers(0, width * height)), int(rng.integers(0, 3))
        c, t = int(rng.choice([0, 255, int(rng.integers(0, 256))])), int(rng.integers(0, 200))
        contexts(tails, frame, residual, at, width, channel, c, t, kernels.REFINE_WIDEST)
        assert (tails >= 0).all(), (trial, tails)
        largest = np.maximum(largest, tails)
    assert (largest < kernels.REFINE_RADICES).all(), (largest, kernels.REFINE_RADICES)
    assert (largest >= kernels.REFINE_RADICES // 2).all()  # the trials reached far into every group's parts
    # the key is the decision's and the channel class's: the decision's side (the format's key holds it too) follows
    # from the decision (kernels.REFINE_KEYS' comment)
    slots = kernels.PLAIN_FORMS["_refine_slots"]
    for g, radix in enumerate(kernels.REFINE_RADICES):
        taken = np.zeros(kernels.REFINE_SLOTS, bool)
        parts = np.zeros(kernels.REFINE_WIDEST, np.int64)
        out = np.zeros(2 * kernels.REFINE_WIDEST, np.int64)
        for part in range(radix):
            parts[g] = part
            for decision in range(kernels.REFINE_DECISIONS):
                for channel in range(3):
                    slots(out, parts, channel, decision, kernels.REFINE_WIDEST)
                    assert 0 <= out[g] < kernels.REFINE_SLOTS and not taken[out[g]]
                    taken[out[g]] = True
