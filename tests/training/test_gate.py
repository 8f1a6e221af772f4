from __future__ import annotations

import pytest

from training.promote import quality_gate


@pytest.mark.parametrize(
    ("challenger", "champion", "passed", "reason"),
    [
        (0.80, None, True, "first champion"),
        (0.60, None, False, "below the floor"),
        (0.886, 0.890, True, "-0.0040"),  # within 0.5 pt
        (0.880, 0.890, False, "0.0100 below the champion"),
        (0.95, 0.90, True, "+0.0500"),
        (0.69, 0.60, False, "below the floor"),  # the floor holds even against a weak champion
    ],
)
def test_gate_decisions(challenger, champion, passed, reason):
    decision = quality_gate(challenger, champion, tolerance=0.005, floor=0.70)
    assert decision.passed is passed
    assert reason in decision.reason
