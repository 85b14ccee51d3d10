"""python -m hfc_tasks.ops.localsite up|down|status|env"""

from __future__ import annotations

import argparse
import sys

from . import SiteError, down, env_lines, status, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hfc_tasks.ops.localsite",
                                     description="Local embedded HFC site (loopback only).")
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("-q", "--quiet", action="store_true", help="up: no progress messages")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(verbose=not args.quiet)
        elif args.command == "down":
            down()
        elif args.command == "status":
            return 0 if all(status().values()) else 1
        else:
            sys.stdout.write(env_lines())
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
