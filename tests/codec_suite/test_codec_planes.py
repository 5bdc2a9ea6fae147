"""codec.planes: i.i.d. histogram coding of uint8 planes (alpha, palette indices)."""

import json

import numpy as np
import pytest

from codec.ans import Stack
from codec.errors import CodingError
from codec.planes import Histogram, fit_histogram, pop_plane, push_plane


def test_round_trip_costs_about_the_histogram_entropy():
    rng = np.random.default_rng(0)
    plane = rng.choice(np.array([0, 128, 255], np.uint8), p=[0.7, 0.2, 0.1], size=(64, 80))
    hist = fit_histogram(plane)
    assert hist.values == (0, 128, 255) and hist.total == plane.size
    header_entry = json.loads(json.dumps(hist.to_dict()))  # survives the JSON header
    assert header_entry["values"] == "0080ff"
    stack = Stack()
    push_plane(stack, plane, hist)
    assert abs(stack.num_valid_bits() - hist.ideal_bits()) < 64
    decoded = pop_plane(stack, Histogram.from_dict(header_entry), plane.shape)
    np.testing.assert_array_equal(decoded, plane)
    assert stack.is_empty()


def test_constant_plane_costs_nothing():
    plane = np.full((30, 7), 255, np.uint8)
    hist = fit_histogram(plane)
    assert hist.is_constant and hist.ideal_bits() == 0
    stack = Stack()
    push_plane(stack, plane, hist)
    assert stack.is_empty()
    np.testing.assert_array_equal(pop_plane(stack, hist, plane.shape), plane)


def test_plane_under_other_data_round_trips():
    rng = np.random.default_rng(1)
    plane = rng.integers(0, 256, (17, 13), dtype=np.uint8)
    stack = Stack()
    stack.push_categorical(rng.integers(0, 4, 100), np.ones(4))
    below = stack.words()
    hist = fit_histogram(plane)
    push_plane(stack, plane, hist)
    np.testing.assert_array_equal(pop_plane(stack, hist, plane.shape), plane)
    np.testing.assert_array_equal(stack.words(), below)


@pytest.mark.parametrize(
    "d",
    [
        {"values": "0100", "counts": [1, 1]},  # not increasing
        {"values": "00", "counts": [1, 1]},  # length mismatch
        {"values": "0", "counts": [1]},  # odd hex
        {"values": "zz", "counts": [1]},
        {"values": "00", "counts": [0]},
        {"values": "00", "counts": [True]},
        {"values": "", "counts": []},
        {"counts": [1]},
        ["00", [1]],
    ],
)
def test_bad_histograms_raise(d):
    with pytest.raises(CodingError):
        Histogram.from_dict(d)


def test_mismatches_raise():
    plane = np.array([[1, 2]], np.uint8)
    with pytest.raises(CodingError):
        push_plane(Stack(), plane, Histogram((1, 2), (1, 2)))
    with pytest.raises(CodingError):
        pop_plane(Stack(), Histogram((1, 2), (1, 1)), (3, 3))
