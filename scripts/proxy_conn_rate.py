#!/usr/bin/env python3
"""New-connection rate through a TCP proxy to a chat server: each worker
connects, sends one PING, reads the PONG and closes, in a loop.
Usage: proxy_conn_rate.py HOST:PORT [workers] [seconds]; prints JSON."""
import asyncio
import json
import sys
import time


async def worker(host, port, deadline, latencies, errors):
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            writer.write(b'{"msgid":12}\n')
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if b'"msgid":13' not in line:
                errors.append("bad reply")
                continue
            latencies.append(time.monotonic() - started)
        except Exception as error:  # counted, never fatal
            errors.append(type(error).__name__)


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5
    latencies, errors = [], []
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(worker(host, int(port), deadline, latencies, errors) for _ in range(workers)))
    latencies.sort()
    p = lambda q: round(latencies[int(q * (len(latencies) - 1))] * 1e6) if latencies else None
    print(json.dumps({"connections_per_s": round(len(latencies) / seconds, 1), "p50_us": p(0.5),
                      "p99_us": p(0.99), "errors": len(errors)}))


asyncio.run(main())
