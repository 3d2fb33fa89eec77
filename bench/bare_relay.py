"""The bare relay: the floor under Vigil's ingest → websocket latency on this stack.

A minimal FastAPI app with Vigil's two doors and nothing behind them:

* ``POST /api/v1/observations`` takes the body as bytes (no parsing, no validation,
  no storage), wraps it in a ``samples`` message with the next sequence number,
  offers it to every connected websocket client and answers 201;
* ``WS /ws/sites/{site_id}`` sends a (nearly empty) snapshot, then the messages,
  and a heartbeat after 2 s of silence, like Vigil. Its sender loop has Vigil's shape:
  one ``asyncio.timeout`` per wait (not a ``wait_for`` task per message), then whatever
  else is queued is sent before the next wait.

Each client has a bounded queue (512 messages, as Vigil's default); a client that
falls behind loses its backlog and gets one ``resync`` message. It is served by
uvicorn with the same settings as ``vigil serve`` (``uvicorn.run``, log level info, no
access log, start-up objects frozen out of the garbage collector)::

    python bench/bare_relay.py --host 127.0.0.1 --port 8001

Messages look like ``{"type":"samples","seq":7,"post":<the POST body verbatim>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc

import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect

QUEUE_SIZE = 512
HEARTBEAT_S = 2.0
_RESYNC = '{"type":"resync"}'
_ACCEPTED = b'{"accepted":true}'

app = FastAPI(title="bare relay", docs_url=None, redoc_url=None, openapi_url=None)


class _Relay:
    def __init__(self) -> None:
        self.seq = 0
        self.queues: set[asyncio.Queue[str]] = set()

    def publish(self, body: str) -> None:
        self.seq += 1
        text = f'{{"type":"samples","seq":{self.seq},"post":{body}}}'
        for queue in self.queues:
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:  # fallen behind: drop the backlog, ask for a resync
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(_RESYNC)


relay = _Relay()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/v1/observations", status_code=201)
async def post_observations(request: Request) -> Response:
    body = await request.body()
    relay.publish(body.decode())
    return Response(_ACCEPTED, status_code=201, media_type="application/json")


@app.websocket("/ws/sites/{site_id}")
async def site_feed(websocket: WebSocket, site_id: int) -> None:
    await websocket.accept()
    queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
    relay.queues.add(queue)
    try:
        await websocket.send_text(
            f'{{"type":"snapshot","site_id":{site_id},"seq":{relay.seq},"chairs":[]}}'
        )
        sender = asyncio.create_task(_send(websocket, queue, site_id))
        receiver = asyncio.create_task(_receive(websocket))
        _, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    except WebSocketDisconnect:
        pass
    finally:
        relay.queues.discard(queue)


async def _send(websocket: WebSocket, queue: asyncio.Queue[str], site_id: int) -> None:
    # The same shape as Vigil's sender (app/live/endpoints.py), minus Vigil's work: wait
    # under asyncio.timeout (no extra task per message, as asyncio.wait_for would make),
    # then send everything already queued before waiting again.
    while True:
        try:
            async with asyncio.timeout(HEARTBEAT_S):
                text = await queue.get()
        except TimeoutError:
            await websocket.send_text(
                f'{{"type":"heartbeat","site_id":{site_id},"seq":{relay.seq}}}'
            )
            continue
        await websocket.send_text(text)
        while not queue.empty():
            await websocket.send_text(queue.get_nowait())


async def _receive(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.receive_text()  # only to notice the client leaving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # as `vigil serve` does after start-up
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
