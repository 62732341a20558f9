"""A bare asyncio OpenAI-style upstream for latency benchmarks (no framework in the way).

POST …/chat/completions answers after --delay-ms with a fixed completion; with "stream": true
it sends --chunks SSE chunks --chunk-ms apart (--burst of them in one write), then a usage
chunk and [DONE]. GET …/health and …/metrics answer 200. HTTP/1.1 keep-alive, loopback only.

    python scripts/fake_upstream.py --port 9100 --delay-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
}).encode()


def _chunk(content: str | None, usage: bool = False) -> bytes:
    obj: dict[str, object] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                              "created": 0, "model": "bench"}
    if usage:
        obj["choices"] = []
        obj["usage"] = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
    else:
        obj["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[head_end + 4:end], self.buffer[end:]
            task = asyncio.ensure_future(self.answer(head.split(" ", 1)[0], body))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def answer(self, method: str, body: bytes) -> None:
        if self.transport is None:
            return
        if method == "GET":
            self._send(b"text/plain", b"ok")
            return
        await asyncio.sleep(self.args.delay_ms / 1000)
        if b'"stream": true' in body or b'"stream":true' in body:
            await self._stream()
        else:
            self._send(b"application/json", BODY)

    def _send(self, ctype: bytes, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype +
                             b"\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)

    async def _stream(self) -> None:
        t = self.transport
        if t is None:
            return
        t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")
        burst = max(1, self.args.burst)
        for sent in range(0, self.args.chunks, burst):
            if t.is_closing():
                return
            t.write(_chunk("tok ") * min(burst, self.args.chunks - sent))
            await asyncio.sleep(self.args.chunk_ms / 1000)
        done = b"data: [DONE]\n\n"
        t.write(_chunk(None, usage=True) + b"%x\r\n%s\r\n" % (len(done), done) + b"0\r\n\r\n")


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(args), "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--chunk-ms", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=1,
                        help="chunks written together, --chunk-ms apart (an engine that "
                             "delivers several tokens per step, or a reader that fell behind)")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
