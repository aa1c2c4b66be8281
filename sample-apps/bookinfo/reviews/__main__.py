"""`python -m bookinfo.reviews`: parse flags, then serve."""

import os
import sys

from isthmus import log

from ..common.cli import build_parser, parse_args
from ..common.server import serve
from ..common.settings import upstream_from_env
from .app import create_app
from .logic import version_named


def main(argv=None) -> int:
    parser = build_parser(
        "python -m bookinfo.reviews",
        "Bookinfo reviews service (GET /reviews/<id>). v1: no stars; v2: black stars; v3: red stars.",
        "  SERVICE_VERSION               v1, v2 or v3 (default v1)\n"
        "  RATINGS_HOSTNAME, RATINGS_SERVICE_PORT, SERVICES_DOMAIN\n"
        "                                where ratings is (default ratings:9080)\n",
    )
    args = parse_args(parser, argv)
    try:
        version = version_named(os.environ.get("SERVICE_VERSION", "v1"))
        ratings = upstream_from_env("ratings", os.environ)
    except ValueError as e:
        parser.error(str(e))
    log.setup(f"reviews-{version.name}", args.log_level)
    return serve(create_app(version, ratings), args.address, args.port, f"reviews-{version.name}")


if __name__ == "__main__":
    sys.exit(main())
