"""The benchmark's baseline: the model served the way tutorials in this field do it.

FastAPI + uvicorn, one tokenizer call and one forward pass per request, no batching, no
quantization, no logging or metrics. ``emotion-ops bench`` starts it to compare our service
against; it is not meant for production.

    python -m bench.baseline_server --model-dir DIR [--port 8000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from fastapi import FastAPI
from pydantic import BaseModel


class TextIn(BaseModel):
    text: str


def create_app(model_dir: Path, max_length: int) -> FastAPI:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = model.config.id2label
    app = FastAPI(title="emotion baseline (FastAPI, one forward per request)")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: TextIn) -> dict:
        inputs = tokenizer(body.text, return_tensors="pt", truncation=True, max_length=max_length)
        with torch.inference_mode():
            probabilities = torch.softmax(model(**inputs).logits, dim=-1)[0]
        best = int(probabilities.argmax())
        return {"emotion": labels[best], "confidence": float(probabilities[best])}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="A registered version's artifacts/model"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    card = json.loads((args.model_dir.parent / "model_card.json").read_text())
    uvicorn.run(
        create_app(args.model_dir, card["max_length"]), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
