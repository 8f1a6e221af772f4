"""The grid behind the novelty default: representation x score x window test, measured on one set
of windows, and the label-free accuracy estimate's backtest.

Features come from one PyTorch fp32 pass over each text set with every hidden state kept, so each
representation is a slice of the same tensors (the served default is measured on its own
runtime in ``bench.drift``):

- representations: the fine-tuned model's last layer (the score before this grid), the mean of all
  its hidden states (the served default, ``core.inference.novelty.layer_mean``), the same without
  the embedding layer's output, its middle layer; the base
  encoder's (the pre-trained model it was fine-tuned from: a second forward per text) middle
  layer and layer mean; the fine-tuned and the base layer means side by side;
- scores: mean cosine distance to the 10 nearest index rows; Mahalanobis distance to the nearest
  class centre (classes as the served model predicts them, one shared Ledoit-Wolf covariance,
  unit-length features); relative Mahalanobis (that minus the distance to one centre of all
  index rows: Ren et al. 2021);
- window tests: the binomial test on the share over a 1 % (or 2 %) threshold, as the verdict runs
  it; Higher Criticism over every row's conformal p-value, its null calibrated on windows drawn
  from other unshifted texts (p-values sharing one calibration set are dependent, so the
  textbook null does not hold).

Unshifted texts are split in two halves: windows come from one half (with Reddit comments mixed
in), Higher Criticism's null from the other. The verdict each window gets is its label-mix test
(the same for every method) or the method's novelty test, each at half the 1 % budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from core.inference.novelty import (
    FIRST_POOLED_LAYER,
    KNN,
    MAHALANOBIS,
    NoveltyIndex,
    expected_share,
    rows_over_threshold,
    token_mean,
    unit,
)

SHARES = (0.05, 0.10, 0.20)
SIZES = (100, 500)


@dataclass(frozen=True)
class TextSets:
    """Per-layer token means (texts x layers x features) of each text set."""

    index: np.ndarray
    calibration: np.ndarray
    unshifted: np.ndarray
    reddit: np.ndarray


def layer_token_means(
    model, tokenizer, texts: list[str], max_length: int, batch: int = 32
) -> tuple[np.ndarray, np.ndarray | None]:
    """Every hidden state's mean over each text's tokens (texts x layers + 1 x features), and the
    classifier's top class of each text (None for an encoder without a head)."""
    import torch

    means, classes = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            encoded = tokenizer(
                texts[start : start + batch],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            result = model(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                output_hidden_states=True,
            )
            mask = encoded["attention_mask"].numpy()
            means.append(np.stack([token_mean(h.float().numpy(), mask) for h in result.hidden_states], 1))
            if getattr(result, "logits", None) is not None:
                classes.append(result.logits.argmax(-1).numpy())
    return np.concatenate(means), np.concatenate(classes) if classes else None


def representations(tuned: TextSets, base: TextSets | None) -> dict[str, Callable[[str], np.ndarray]]:
    """Name -> (text set name -> features)."""
    layers = tuned.index.shape[1]

    def of(sets: TextSets, pick: Callable[[np.ndarray], np.ndarray]) -> Callable[[str], np.ndarray]:
        return lambda name: pick(getattr(sets, name))

    chosen = {
        "tuned last layer": of(tuned, lambda x: x[:, -1]),
        "tuned layer mean (served)": of(tuned, lambda x: x[:, FIRST_POOLED_LAYER:].mean(1)),
        "tuned layer mean, without embeddings": of(tuned, lambda x: x[:, 1:].mean(1)),
        "tuned middle layer": of(tuned, lambda x: x[:, layers // 2]),
    }
    if base is not None:
        base_layers = base.index.shape[1]
        chosen["base middle layer"] = of(base, lambda x: x[:, base_layers // 2])
        chosen["base layer mean"] = of(base, lambda x: x[:, 1:].mean(1))

        def both(name: str) -> np.ndarray:
            return np.concatenate(
                [unit(getattr(tuned, name)[:, 1:].mean(1)), unit(getattr(base, name)[:, 1:].mean(1))], 1
            )

        chosen["tuned + base layer means"] = both
    return chosen


def scorers(index: np.ndarray, classes: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    knn = NoveltyIndex.calibrated(index, index[:1], method=KNN)
    maha = NoveltyIndex.calibrated(index, index[:1], classes, method=MAHALANOBIS)
    # Relative Mahalanobis (Ren et al. 2021): minus the distance to one Gaussian over all rows.
    background = NoveltyIndex.calibrated(
        index, index[:1], np.zeros(len(index), dtype=int), method=MAHALANOBIS
    )
    return {
        "kNN cosine": knn.score,
        "Mahalanobis": maha.score,
        "relative Mahalanobis": lambda rows: maha.score(rows) - background.score(rows),
    }


def critical_count(size: int, share: float, alpha: float) -> int:
    """The fewest novel rows of ``size`` the binomial test calls drift at ``alpha``."""
    return int(stats.binom.isf(alpha, size, share)) + 1


def higher_criticism(p_values: np.ndarray) -> np.ndarray:
    """HC+ of each window (rows: windows, columns: its rows' p-values), over the smaller half."""
    count = p_values.shape[1]
    ordered = np.sort(p_values, axis=1)[:, : count // 2]
    rank = np.arange(1, ordered.shape[1] + 1) / count
    statistic = np.sqrt(count) * (rank - ordered) / np.sqrt(ordered * (1 - ordered))
    statistic[ordered < 1 / count] = -np.inf  # HC+: the tiniest p-values alone do not decide
    return statistic.max(axis=1)


@dataclass(frozen=True)
class Windows:
    """Row numbers of each case's windows: (unshifted half B rows, Reddit rows) per window."""

    cases: dict[str, list[tuple[np.ndarray, np.ndarray]]]


def draw_windows(
    rng: np.random.Generator, unshifted_rows: np.ndarray, reddit_rows: int, windows: int
) -> Windows:
    cases: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for size in SIZES:
        for share in (0.0, *SHARES):
            drawn = []
            for _ in range(windows):
                shifted = rng.binomial(size, share)
                drawn.append(
                    (
                        rng.choice(
                            unshifted_rows, size - shifted, replace=size - shifted > len(unshifted_rows)
                        ),
                        rng.choice(reddit_rows, shifted, replace=shifted > reddit_rows),
                    )
                )
            cases[f"{size}:{share}"] = drawn
    return Windows(cases)


def run_grid(
    tuned: TextSets,
    base: TextSets | None,
    index_classes: np.ndarray,
    label_mix_drifted: dict[str, np.ndarray],
    half_a: np.ndarray,
    half_b: np.ndarray,
    windows: Windows,
    false_alarm_rate: float,
    null_windows: int,
    rng: np.random.Generator,
    progress=print,
) -> list[dict]:
    """One row per representation x score x test: false alarms and power per case."""
    alpha = false_alarm_rate / 2
    rows = []
    for name, features in representations(tuned, base).items():
        progress(f"grid: {name}")
        index = features("index")
        for score_name, score in scorers(index, index_classes).items():
            calibration = np.sort(score(features("calibration")))
            unshifted, reddit = score(features("unshifted")), score(features("reddit"))
            tests: dict[str, Callable[[np.ndarray, np.ndarray], bool]] = {}
            for share in (0.01, 0.02):
                threshold = calibration[len(calibration) - rows_over_threshold(len(calibration), share) - 1]
                tests[f"binomial {share:.0%}"] = _binomial(
                    threshold, expected_share(len(calibration), share), alpha
                )
            tests["Higher Criticism"] = _higher_criticism(
                calibration, unshifted[half_a], alpha, null_windows, rng
            )
            for test_name, test in tests.items():
                row: dict = {"representation": name, "score": score_name, "test": test_name}
                for case, drawn in windows.cases.items():
                    novelty = np.array([test(unshifted[a], reddit[b]) for a, b in drawn])
                    row[case] = round(float((novelty | label_mix_drifted[case]).mean()), 4)
                over_1pct = calibration[len(calibration) - rows_over_threshold(len(calibration), 0.01) - 1]
                row["reddit_over_1pct"] = round(float((reddit > over_1pct).mean()), 4)
                rows.append(row)
    return rows


def _binomial(threshold: float, expected: float, alpha: float) -> Callable[[np.ndarray, np.ndarray], bool]:
    critical = {size: critical_count(size, expected, alpha) for size in SIZES}

    def test(unshifted: np.ndarray, reddit: np.ndarray) -> bool:
        size = len(unshifted) + len(reddit)
        novel = int((unshifted > threshold).sum() + (reddit > threshold).sum())
        return novel >= critical.get(size, critical_count(size, expected, alpha))

    return test


def _higher_criticism(
    calibration: np.ndarray, null_pool: np.ndarray, alpha: float, null_windows: int, rng: np.random.Generator
) -> Callable[[np.ndarray, np.ndarray], bool]:
    def p_values(scores: np.ndarray) -> np.ndarray:
        # Conformal: the share of calibration scores at or over each score.
        over = len(calibration) - np.searchsorted(calibration, scores, side="left")
        return (1 + over) / (len(calibration) + 1)

    cut = {}
    for size in SIZES:
        null = np.stack(
            [
                p_values(rng.choice(null_pool, size, replace=size > len(null_pool)))
                for _ in range(null_windows)
            ]
        )
        cut[size] = float(np.quantile(higher_criticism(null), 1 - alpha))

    def test(unshifted: np.ndarray, reddit: np.ndarray) -> bool:
        scores = np.concatenate([unshifted, reddit])
        return bool(higher_criticism(p_values(scores)[None, :])[0] > cut[len(scores)])

    return test


def grid_markdown(rows: list[dict]) -> list[str]:
    lines = [
        "| representation | score | window test | FA 100 | FA 500 | 5 %/500 | 10 %/100 | 20 %/100 "
        "| Reddit over 1 % |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['representation']} | {row['score']} | {row['test']} | {row['100:0.0']:.1%} | "
            f"{row['500:0.0']:.1%} | {row['500:0.05']:.1%} | {row['100:0.1']:.1%} | {row['100:0.2']:.1%} | "
            f"{row['reddit_over_1pct']:.1%} |"
        )
    return lines
