"""`pycaffe-lite`: the command line, mirroring Caffe's `caffe` tool.

Each module in this package adds its subcommands through a function
`register(subparsers)`; each subcommand sets `func(args) -> exit code`.
Modules are discovered, so adding a command is adding a module.
"""
import argparse
import importlib
import logging
import pkgutil
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="pycaffe-lite",
                                     description="Caffe's workflow in Python: train, test and time nets "
                                                 "declared in prototxt files.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        register = getattr(importlib.import_module(f"{__name__}.{module.name}"), "register", None)
        if register:
            register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as exc:
        # User errors (bad prototxt, missing file, ...) get one clear line, not a traceback.
        print(f"pycaffe-lite {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
