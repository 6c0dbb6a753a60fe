"""`pycaffe-lite`: the command line, mirroring Caffe's `caffe` tool.

Each module in this package adds its subcommands through a function
`register(subparsers)`; each subcommand sets `func(args) -> exit code`.
Modules are discovered, so adding a command is adding a module.

Flags are also taken in the forms of Caffe's gflags: `-solver S` and
`-solver=S` mean `--solver S` (see `gflags_style`).
"""
import argparse
import importlib
import logging
import pkgutil
import signal
import sys

from . import _startup


def build_parser():
    parser = argparse.ArgumentParser(prog="pycaffe-lite",
                                     description="Caffe's workflow in Python: train, test and time nets "
                                                 "declared in prototxt files.",
                                     epilog="Flags may be written as Caffe's tool takes them: -solver S, "
                                            "-solver=S, --solver S or --solver=S.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        register = getattr(importlib.import_module(f"{__name__}.{module.name}"), "register", None)
        if register:
            register(subparsers)
    parser.subcommands = subparsers.choices   # name -> its parser (for gflags_style)
    return parser


def gflags_style(argv, parser):
    """argv with each single-dash long flag of the subcommand (`-solver`, `-gpu=0`) written with two
    dashes, as gflags, which parses Caffe's flags, accepts both.  Options that are themselves spelled
    with one dash (-h, or gflags-style flags a subcommand declares) are left alone, and so is
    everything after `--`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if command is None or argv[command] not in parser.subcommands:
        return argv
    known = parser.subcommands[argv[command]]._option_string_actions
    for i in range(command + 1, len(argv)):
        arg = argv[i]
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if arg.startswith("-") and not arg.startswith("--") and name not in known and "-" + name in known:
            argv[i] = "-" + arg
    return argv


def main(argv=None):
    previous = _startup.interrupts_raise()
    try:
        return _run(argv)
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM) before training took over the signals (start-up, net building):
        # one line and the shell's 128 + SIGINT, not a traceback
        print("pycaffe-lite: interrupted", file=sys.stderr)
        return 130
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def _run(argv):
    parser = build_parser()
    args = parser.parse_args(gflags_style(argv, parser))
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
