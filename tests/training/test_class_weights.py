from __future__ import annotations

import torch

from training.train import class_weights


def test_sqrt_inverse_weights_lift_rare_classes_and_average_one_per_row():
    labels = [0] * 400 + [1] * 100 + [2] * 25
    weights = class_weights(labels, 3, "sqrt_inverse")
    assert torch.allclose(weights[0] / weights[1], torch.tensor(0.5)) and weights[2] > weights[1]
    per_row_mean = sum(weights[label] for label in labels) / len(labels)
    assert torch.isclose(per_row_mean, torch.tensor(1.0))
    assert class_weights(labels, 3, "none") is None
