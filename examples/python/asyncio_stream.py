#!/usr/bin/env python3
"""A fake LLM token stream that ihc stops mid-stream.

Run it beside an ihc-agent, then interrupt its hardware_id from anywhere:

    PYTHONPATH=python python3 examples/python/asyncio_stream.py --hw dev-1 &
    build/bin/ihc interrupt dev-1 --reason 'user stop'

It streams a token every few milliseconds inside an ihc.aio session; at the stop the
generator is cancelled where it waits, and the script prints how many tokens it emitted and
how long after the stop event arrived the stream had stopped.
"""

import argparse
import asyncio
import itertools
import sys
import time

import ihc
import ihc.aio

WORDS = ("the quick brown fox jumps over the lazy dog while the model keeps talking "
         "about interrupts hardware sessions and tokens").split()


async def fake_llm(period_s: float):
    """What an LLM client's async stream looks like: a token, then a wait for the next."""
    for word in itertools.cycle(WORDS):
        await asyncio.sleep(period_s)  # the network / the model
        yield word + " "


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--hw", default="dev-1", help="hardware_id of the session (dev-1)")
    ap.add_argument("--module", default="llm_stream", help="module name in the result")
    ap.add_argument("--period-ms", type=float, default=5.0, help="time between tokens (5)")
    ap.add_argument("--url", default=None,
                    help="the agent's local API (default: IHC_LOCAL_URL, else "
                         "unix:///tmp/ihc-agent.sock)")
    ap.add_argument("--quiet", action="store_true", help="do not print the tokens")
    a = ap.parse_args()

    async with ihc.aio.session(a.hw, module=a.module, url=a.url) as s:
        print(f"session {s.session_id} on {a.hw}: streaming; stop it with "
              f"`ihc interrupt {a.hw}`", file=sys.stderr, flush=True)
        n = 0
        async for token in s.guard(fake_llm(a.period_ms / 1000.0)):
            n += 1
            if not a.quiet:
                print(token, end="", flush=True)
        ended = time.monotonic()
    if not a.quiet:
        print()
    if s.stop is None:
        print(f"the stream ended by itself after {n} tokens")
        return 0
    stop = s.stop
    why = f"interrupt {stop['interrupt_id']}" if "interrupt_id" in stop else "session ended"
    if stop.get("reason"):
        why += f": {stop['reason']}"
    print(f"stopped after {n} tokens, {(ended - s.stop_time) * 1000:.3f} ms after the stop "
          f"event arrived ({why})", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except ihc.Error as e:
        print(f"asyncio_stream: {e}", file=sys.stderr)
        sys.exit(1)
