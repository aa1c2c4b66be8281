"""Subcommands of `isthmus`, one module each. A module defines ``register(subparsers)``, which adds its
subparser(s) and sets ``run=<function(args, parser) -> int>`` and ``parser=<the subparser>`` as
defaults. ``isthmus.cli`` discovers every module in this package, in name order."""
