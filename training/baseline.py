"""TF-IDF + logistic regression: the yardstick every fine-tuned model is compared with."""

from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from training.data import EmotionDataset

BASELINE_PARAMS = {
    "ngram_range": (1, 2),
    "min_df": 2,
    "sublinear_tf": True,
    "C": 10.0,
    "class_weight": "balanced",
    "max_iter": 2000,
}


def train_baseline(dataset: EmotionDataset, seed: int = 42) -> Pipeline:
    """Fit word uni+bigram TF-IDF features and a class-balanced logistic regression."""
    pipeline = Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    ngram_range=BASELINE_PARAMS["ngram_range"],
                    min_df=BASELINE_PARAMS["min_df"],
                    sublinear_tf=BASELINE_PARAMS["sublinear_tf"],
                ),
            ),
            (
                "classifier",
                LogisticRegression(
                    C=BASELINE_PARAMS["C"],
                    class_weight=BASELINE_PARAMS["class_weight"],
                    max_iter=BASELINE_PARAMS["max_iter"],
                    random_state=seed,
                ),
            ),
        ]
    )
    pipeline.fit(dataset.texts("train"), dataset.label_ids("train"))
    return pipeline
