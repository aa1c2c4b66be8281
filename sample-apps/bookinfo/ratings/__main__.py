"""`python -m bookinfo.ratings`: parse flags, then serve."""

import os
import sys

from isthmus import log

from ..common.cli import build_parser, parse_args
from ..common.server import serve
from .app import create_app


def main(argv=None) -> int:
    parser = build_parser(
        "python -m bookinfo.ratings",
        "Bookinfo ratings service (GET /ratings/<id>).",
        "  SERVICE_VERSION               reported version (default v1)\n",
    )
    args = parse_args(parser, argv)
    log.setup("ratings", args.log_level)
    return serve(create_app(os.environ.get("SERVICE_VERSION", "v1")), args.address, args.port, "ratings")


if __name__ == "__main__":
    sys.exit(main())
