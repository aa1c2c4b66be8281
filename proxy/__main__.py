"""`python -m proxy -c bootstrap.yaml`: parse Envoy's flags and hand over to proxy.server."""

from __future__ import annotations

import sys

from proxy.options import parse_options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    from proxy.server import run

    return run(options)


if __name__ == "__main__":
    sys.exit(main())
