"""`python -m bookinfo.productpage`: parse flags, then serve."""

import os
import sys

from isthmus import log

from ..common.cli import build_parser, parse_args
from ..common.server import serve
from ..common.settings import upstream_from_env
from .app import Upstreams, create_app


def main(argv=None) -> int:
    parser = build_parser(
        "python -m bookinfo.productpage",
        "Bookinfo productpage: the web page (GET /productpage), sign-in (POST /login) and /api/v1/products.",
        "  DETAILS_HOSTNAME, DETAILS_SERVICE_PORT   where details is (default details:9080)\n"
        "  REVIEWS_HOSTNAME, REVIEWS_SERVICE_PORT   where reviews is (default reviews:9080); without a\n"
        "                                           mesh a comma-separated list is used in turn\n"
        "  RATINGS_HOSTNAME, RATINGS_SERVICE_PORT   where ratings is (default ratings:9080)\n"
        "  SERVICES_DOMAIN                          appended to each host name when set\n",
    )
    args = parse_args(parser, argv)
    try:
        upstreams = Upstreams(*(upstream_from_env(n, os.environ) for n in ("details", "reviews", "ratings")))
    except ValueError as e:
        parser.error(str(e))
    log.setup("productpage", args.log_level)
    return serve(create_app(upstreams), args.address, args.port, "productpage")


if __name__ == "__main__":
    sys.exit(main())
