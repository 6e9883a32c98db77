#!/usr/bin/env python3
"""A TCP proxy that adds a fixed delay each way: a far client on loopback.

    delay_proxy.py LISTEN_PORT TARGET_PORT ONE_WAY_MS [MAX_HELD_BYTES]

Listens on 127.0.0.1:LISTEN_PORT and forwards each connection to
127.0.0.1:TARGET_PORT, holding every chunk ONE_WAY_MS before passing it
on, in both directions (the round trip grows by twice that). At most
MAX_HELD_BYTES (16 MiB) are held per direction, like a network path's
buffers: past that the proxy stops reading, and TCP's own flow control
pushes back on the sender. Used by scripts/bench.sh (BENCH_API_RTT_MS)
to show what a protocol's windows do over a long round trip.

Python 3 standard library only; it moves a few hundred MB/s at most, far
more than a window-bound transfer over a long round trip needs.
"""

import asyncio
import sys
import time

CHUNK = 256 << 10


async def pipe(reader, writer, delay, cap):
    """Forward reader to writer, each chunk `delay` seconds late."""
    queue = asyncio.Queue()
    held = 0
    room = asyncio.Condition()

    async def take():
        nonlocal held
        while True:
            data = await reader.read(CHUNK)
            async with room:
                await room.wait_for(lambda: held < cap)
                held += len(data)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def give():
        nonlocal held
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()
            async with room:
                held -= len(data)
                room.notify_all()

    await asyncio.gather(take(), give())


async def main(listen, target, delay, cap):
    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()  # the target is down: the client sees a reset
            return
        await asyncio.gather(pipe(client_r, server_w, delay, cap),
                             pipe(server_r, client_w, delay, cap),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    cap = int(sys.argv[4]) if len(sys.argv) > 4 else 16 << 20
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000, cap))
