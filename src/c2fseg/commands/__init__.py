"""One module per ``c2fseg`` subcommand: ``add_parser(subparsers)`` and ``run(args) -> int``."""
