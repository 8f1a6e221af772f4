"""Length-aware batching: the cut of sorted lengths into forward batches, and that it changes
no prediction."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from core.inference.predictor import length_buckets
from core.registry import connect, load_bundle
from core.settings import CoreSettings


def cost(lengths, buckets, forward_cost):
    return sum(forward_cost + (end - start) * lengths[end - 1] for start, end in buckets)


def every_cut(count, max_batch):
    """All ways to cut ``count`` sorted items into contiguous batches of at most ``max_batch``."""
    for cuts in itertools.product((False, True), repeat=count - 1):
        bounds = [0, *(index + 1 for index, cut in enumerate(cuts) if cut), count]
        buckets = list(itertools.pairwise(bounds))
        if all(end - start <= max_batch for start, end in buckets):
            yield buckets


@pytest.mark.parametrize("seed", range(20))
def test_the_cut_is_the_cheapest_one(seed):
    rng = random.Random(seed)
    lengths = sorted(rng.randint(3, 64) for _ in range(rng.randint(1, 9)))
    max_batch, forward_cost = rng.randint(1, 5), rng.choice([0, 8, 16, 64])
    buckets = length_buckets(lengths, max_batch, forward_cost)
    assert buckets[0][0] == 0 and buckets[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(buckets))
    assert all(0 < end - start <= max_batch for start, end in buckets)
    best = min(cost(lengths, cut, forward_cost) for cut in every_cut(len(lengths), max_batch))
    assert cost(lengths, buckets, forward_cost) == best


def test_equal_lengths_fill_whole_batches_and_mixed_lengths_split():
    equal = length_buckets([20] * 10, 4, 16)
    assert len(equal) == 3 and all(end - start <= 4 for start, end in equal)  # as few as fit
    # Two short texts and two long ones: padding the short ones to 60 tokens costs more than a
    # second forward pass.
    assert length_buckets([5, 6, 60, 62], 64, 16) == [(0, 2), (2, 4)]
    # A forward pass worth more than the padding: one batch.
    assert length_buckets([5, 6, 60, 62], 64, 1000) == [(0, 4)]
    assert length_buckets([], 64, 16) == []


def test_bucketing_changes_no_prediction(registry):
    # fp32 PyTorch: dynamic int8 quantizes activations per batch, so its numbers depend on the
    # batching.
    settings = CoreSettings(var_dir=registry)
    predictor = load_bundle(connect(settings), settings).predictor()
    texts = [
        "sad",
        "i am so very happy and glad today",
        "i feel",
        "angry",
        "i really adore and love it so",
    ] * 3
    predictor.forward_cost_tokens = 0  # as many batches as pay off
    bucketed = predictor.predict_proba(texts)
    predictor.forward_cost_tokens = 10**6  # one padded batch
    padded = predictor.predict_proba(texts)
    assert np.allclose(bucketed, padded, atol=1e-5)
