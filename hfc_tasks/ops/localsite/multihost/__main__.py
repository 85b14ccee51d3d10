"""``python -m hfc_tasks.ops.localsite.multihost _inside <host>``: the child that starts a host's
daemons in its namespace (see hosts.run_inside). Operators use ``hfc site ... --shape multihost``."""

from __future__ import annotations

import argparse
import sys

from .._util import SiteError
from .hosts import inside
from .layout import HOSTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hfc_tasks.ops.localsite.multihost")
    parser.add_argument("command", choices=["_inside"])
    parser.add_argument("host", choices=list(HOSTS))
    args = parser.parse_args(argv)
    try:
        inside(args.host)
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
