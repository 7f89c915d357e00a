"""Every benchmark, one after the other, each on its own fresh bench stack (``make bench``).

.venv/bin/python -m bench.run_all [--users 30] [--turns 40] [--streams 50] [...] [--threads]

``--threads`` adds bench.threads (history, thread list and search on 10 million messages) with ``--reuse``: the
first run builds its data set (14-25 min, ~11 GB in .devstack/run/bench-threads), later runs reuse it.
"""

from __future__ import annotations

import argparse
import time

from bench import chat, provisioning, threads
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
    parser.add_argument("--threads", action="store_true", help="also bench.threads (its data set: 14-25 min once)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    provisioning_args = ["--users", str(args.users), "--burst", str(args.burst), "--posts", str(args.posts)]
    provisioning.main([*provisioning_args, "--concurrency", str(args.concurrency)])
    chat.main(["--turns", str(args.turns), "--streams", str(args.streams), "--hold", str(args.hold)])
    if args.threads:
        threads.main(["--reuse"])
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    entry_point(main)
