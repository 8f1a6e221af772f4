"""The lean references of ``emotion-ops bench path``: what a request costs with nothing but HTTP.

- ``bare``: a raw ASGI route on uvicorn that parses the JSON body and answers a fixed prediction,
  no model: the floor of one request's CPU on this machine.
- ``lean``: the same route in front of the champion, through the service's own in-process
  batcher (``core.inference.batching``) on the service's runtime and precision, one intra-op
  thread per worker: the model with the thinnest HTTP path in front of it.

Both run the service's process layout (one uvicorn worker per core, uvloop and httptools where
installed, no access log). Not a product: a yardstick for the service's request path.

    python -m bench.lean_server --mode lean --model-dir DIR --runtime onnx --quantize --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

FIXED_ANSWER = json.dumps({"emotion": "joy", "confidence": 1.0}).encode()
HEADERS = [(b"content-type", b"application/json")]


async def _read_body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send, status: int, body: bytes) -> None:
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": HEADERS + length})
    await send({"type": "http.response.body", "body": body})


def create_app():
    """The ASGI app of the mode in ``EMOTION_LEAN_MODE`` (uvicorn's factory, once per worker)."""
    mode = os.environ["EMOTION_LEAN_MODE"]
    predict = None
    if mode == "lean":
        from core.inference.batching import MicroBatcher
        from core.inference.runtime import load_predictor

        predictor = load_predictor(
            Path(os.environ["EMOTION_LEAN_MODEL_DIR"]),
            runtime=os.environ["EMOTION_LEAN_RUNTIME"],  # type: ignore[arg-type]
            quantize=os.environ["EMOTION_LEAN_QUANTIZE"] == "true",
            threads=1,
            max_length=int(os.environ["EMOTION_LEAN_MAX_LENGTH"]),
            batch_size=64,
        )
        labels = list(predictor.labels)
        batcher = MicroBatcher(lambda texts: list(predictor.predict_proba(texts)), max_batch=64)

        async def predict(text: str) -> bytes:
            probabilities = (await batcher.submit([text]))[0]
            best = int(probabilities.argmax())
            return json.dumps({"emotion": labels[best], "confidence": float(probabilities[best])}).encode()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            return await _answer(send, 200, b'{"status":"ok"}')
        body = await _read_body(receive)
        try:
            text = json.loads(body)["text"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return await _answer(send, 400, b'{"error":"send {\\"text\\": \\"...\\"}"}')
        await _answer(send, 200, FIXED_ANSWER if predict is None else await predict(text))

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("bare", "lean"), required=True)
    parser.add_argument("--model-dir", type=Path, help="A registered version's artifacts/model (lean)")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="onnx")
    parser.add_argument("--quantize", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    os.environ["EMOTION_LEAN_MODE"] = args.mode
    if args.mode == "lean":
        if args.model_dir is None:
            parser.error("--mode lean needs --model-dir")
        card = json.loads((args.model_dir.parent / "model_card.json").read_text())
        os.environ.update(
            {
                "EMOTION_LEAN_MODEL_DIR": str(args.model_dir),
                "EMOTION_LEAN_RUNTIME": args.runtime,
                "EMOTION_LEAN_QUANTIZE": str(args.quantize).lower(),
                "EMOTION_LEAN_MAX_LENGTH": str(card["max_length"]),
            }
        )
    uvicorn.run(
        "bench.lean_server:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
