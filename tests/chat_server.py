"""A chat-completions server for tests (FastAPI + uvicorn on 127.0.0.1, in a thread): scripted replies.

A request's behaviour comes from markers in its last user text: ``[[429x2]]`` (the first 2 requests of that question
get 429 with Retry-After 0.2 s), ``[[500x1]]``, ``[[slow1]]`` (the first request sleeps past the client timeout),
``[[malformed]]`` (200 with a body that is not JSON), ``[[bad]]`` (400), ``[[length]]`` (finish_reason "length").
Otherwise it answers with the first option listed, as JSON. Every request is recorded (time, body) so tests can
count calls and measure the request rate (``GET /v1/stats`` gives the count to another process).

``python -m tests.chat_server --port P --latency-s 0.05`` serves in its own process (benchmarks/api_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import threading
import time
from collections import Counter

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tests.conftest import free_port

SERVED_MODEL = "served-test-model-1"


class ChatServer:
    def __init__(self, latency_s: float = 0.0, port: int | None = None) -> None:
        self.latency_s = latency_s
        self.requests: list[tuple[float, dict]] = []
        self.seen: Counter = Counter()
        self.port = port or free_port()
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._complete)
        self.app.get("/v1/stats")(self._stats)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ChatServer":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("chat server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    async def _stats(self) -> dict:
        return {"requests": len(self.requests)}

    @staticmethod
    def _text(body: dict) -> str:
        content = body["messages"][-1]["content"]
        return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content if part.get("type") == "text")

    async def _complete(self, request: Request):
        body = await request.json()
        self.requests.append((time.monotonic(), body))
        text = self._text(body)
        key = text
        self.seen[key] += 1
        attempt = self.seen[key]
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        for status, retry_after in ((429, "0.2"), (500, None)):
            match = re.search(rf"\[\[{status}x(\d+)\]\]", text)
            if match and attempt <= int(match.group(1)):
                headers = {"retry-after": retry_after} if retry_after else {}
                return JSONResponse({"error": {"message": f"scripted {status}", "type": "server"}}, status_code=status, headers=headers)
        if "[[slow1]]" in text and attempt == 1:
            await asyncio.sleep(2.0)
        if "[[malformed]]" in text:
            return PlainTextResponse("{not json", media_type="application/json")
        if "[[bad]]" in text:
            return JSONResponse({"error": {"message": "scripted bad request", "type": "invalid_request_error"}}, status_code=400)
        options = re.findall(r"^[A-Z]+\. (.+)$", text, flags=re.MULTILINE)
        answer = options[0] if options else "?"
        finish = "length" if "[[length]]" in text else "stop"
        content = f'{{"reasoning": "scripted", "answer": "{answer}"' + ("" if finish == "length" else "}")
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 0, "model": SERVED_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="scripted chat-completions server on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-s", type=float, default=0.0)
    args = parser.parse_args()
    ChatServer(latency_s=args.latency_s, port=args.port).server.run()  # in the foreground, until killed


if __name__ == "__main__":
    main()
