"""A delaying TCP relay: ``python -m benchmarks.drift.relay --listen P --target H:P --jitter-ms J``.

Bytes from the target (the media server) to the client (a packager node) are held back by a
random delay drawn uniformly from [0, J] ms per received chunk; delivery times never go
backwards, so order is kept (as TCP keeps it) and a later chunk may wait for an earlier one.
Bytes from the client to the target pass at once. One relay process per node, each with its
own seed: every node sees its own jitter on the same stream. The process ends by itself after
``--max-seconds`` (and when its parent dies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


async def _delayed_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        jitter: float, rng: random.Random) -> None:
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def receive() -> None:
        last = 0.0
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                due = max(last, loop.time() + rng.uniform(0.0, jitter))
                last = due
                queue.put_nowait((due, data))
        queue.put_nowait(None)

    async def deliver() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    await asyncio.gather(receive(), deliver())


async def _serve(listen: int, host: str, port: int, jitter: float, seed: int,
                 max_seconds: float) -> None:
    rng = random.Random(seed)

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            t_reader, t_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, TimeoutError):
            c_writer.close()
            return
        await asyncio.gather(_pipe(c_reader, t_writer),
                             _delayed_pipe(t_reader, c_writer, jitter, rng))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print(f"relay 127.0.0.1:{listen} -> {host}:{port}, jitter 0..{jitter * 1000:.0f} ms",
          flush=True)
    async with server:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.serve_forever(), max_seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--target", required=True, help="HOST:PORT")
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--max-seconds", type=float, default=900.0)
    a = p.parse_args(argv)
    host, _, port = a.target.rpartition(":")
    asyncio.run(_serve(a.listen, host, int(port), a.jitter_ms / 1000.0, a.seed,
                       a.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
