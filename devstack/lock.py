"""Write the lock files (``make lock``) or fail when they no longer match their inputs (``make lock-check``).

Every install takes exact versions with hashes from a lock file, so no build resolves or fetches anything
else: ``make`` (``requirements/bootstrap.lock`` then ``requirements/dev.lock``), the Dockerfile
(``bootstrap.lock`` then ``service.lock``) and ``devstack/install.sh`` (``bootstrap.lock`` then the Letta
server's lock, and the pgserver wheel's). uv compiles them for the one platform we run on, CPython 3.11 on
Linux x86_64, from PyPI.

A lock keeps the versions it already has unless its input asks for others (uv prefers the pins of an
existing output file), so a new upstream release changes nothing until you ask for it:

    make lock                                     # after editing pyproject.toml or an input
    make lock ARGS='--upgrade-package anyio'      # move one locked package to its newest release
    make lock-check                               # compile into a temp dir and compare the pins (make test)

The check compares versions, not hashes: a wheel uploaded later to a locked release must not fail CI.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LETTA_VERSION = "0.16.8"


@dataclass(frozen=True)
class Lock:
    output: str
    sources: tuple[str, ...]
    # What restricts versions without adding packages: the bootstrap pins wherever pip or setuptools is
    # also a dependency, and dev.lock for service.lock so that the image runs exactly what the tests ran.
    constraint: str | None
    options: tuple[str, ...] = ()  # more `uv pip compile` options


LOCKS = (
    Lock("requirements/bootstrap.lock", ("requirements/bootstrap.in",), None),
    Lock("requirements/dev.lock", ("pyproject.toml", "--extra", "dev"), "requirements/bootstrap.in"),
    Lock("requirements/service.lock", ("pyproject.toml",), "requirements/dev.lock"),
    # A freeze of a working Letta server venv, versions kept exactly. The freeze leaves out setuptools, which
    # letta needs: the constraint gives it the bootstrap version.
    Lock(
        f"devstack/letta-server-{LETTA_VERSION}.lock",
        (f"devstack/letta-server-{LETTA_VERSION}.requirements.txt",),
        "requirements/bootstrap.in",
    ),
    # The wheel install.sh unpacks for its PostgreSQL binaries, without its Python dependencies.
    Lock("devstack/pgserver.lock", ("devstack/pgserver.in",), None, ("--no-deps",)),
)
OUTPUTS = {lock.output for lock in LOCKS}


def compile_all(into: Path, extra: list[str]) -> None:
    for lock in LOCKS:
        constraint: tuple[str, ...] = ()
        if lock.constraint:
            # A constraint that is itself a lock is read from `into`, i.e. as just compiled.
            constraint = ("--constraint", _relative((into if lock.constraint in OUTPUTS else ROOT) / lock.constraint))
        command = [
            *(sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--generate-hashes"),
            *("--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu"),
            *("--custom-compile-command", "make lock"),
            *lock.sources,
            *lock.options,
            *constraint,
            *("--output-file", _relative(into / lock.output)),
            *extra,
        ]
        subprocess.run(command, cwd=ROOT, check=True)


def _relative(path: Path) -> str:
    # Relative to the repo root where possible: uv writes these paths into the files' comments.
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def pins(path: Path) -> set[str]:
    """`name==version` of every requirement in a lock file (hashes and comments left out)."""
    if not path.exists():
        return set()
    lines = path.read_text().splitlines()
    return {line.rstrip(" \\") for line in lines if line and not line[0].isspace() and not line.startswith("#")}


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        into = Path(tmp)
        for output in OUTPUTS:
            (into / output).parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / output).exists():
                shutil.copy(ROOT / output, into / output)  # its pins are the versions uv prefers
        compile_all(into, [])
        compared = {output: (pins(ROOT / output), pins(into / output)) for output in sorted(OUTPUTS)}
    stale = {output: (old, new) for output, (old, new) in compared.items() if old != new}
    for output, (old, new) in stale.items():
        print(f"{output} is out of date:", file=sys.stderr)
        for line in sorted(old - new):
            print(f"  - {line}", file=sys.stderr)
        for line in sorted(new - old):
            print(f"  + {line}", file=sys.stderr)
    if stale:
        print("The lock files do not match their inputs: run `make lock` and commit the result.", file=sys.stderr)
        return 1
    print(f"lock files up to date ({', '.join(sorted(OUTPUTS))})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with a fresh compile instead of writing")
    args, extra = parser.parse_known_args()
    if args.check:
        if extra:
            parser.error("--check takes no uv options")
        return check()
    compile_all(ROOT, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
