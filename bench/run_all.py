"""Every benchmark, one after the other, each on its own fresh bench stack (``make bench``).

.venv/bin/python -m bench.run_all [--users 30] [--turns 40] [--streams 50] [...]
"""

from __future__ import annotations

import argparse
import time

from bench import chat, provisioning
from bench.chat import DEFAULT_STREAMS
from bench.common import entry_point


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=30, help="provisioning: sequential signups")
    parser.add_argument("--burst", type=int, default=10, help="provisioning: signups at the same moment")
    parser.add_argument("--posts", type=int, default=200, help="provisioning: webhook POSTs per mode")
    parser.add_argument("--concurrency", type=int, default=20, help="provisioning: webhook POSTs in flight")
    parser.add_argument("--turns", type=int, default=40, help="chat: measured turns per path")
    parser.add_argument("--streams", type=int, default=DEFAULT_STREAMS, help="chat: concurrent streams")
    parser.add_argument("--hold", type=float, default=0.0, help="chat: extra seconds the LLM waits in (c)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    provisioning_args = ["--users", str(args.users), "--burst", str(args.burst), "--posts", str(args.posts)]
    provisioning.main([*provisioning_args, "--concurrency", str(args.concurrency)])
    chat.main(["--turns", str(args.turns), "--streams", str(args.streams), "--hold", str(args.hold)])
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    entry_point(main)
