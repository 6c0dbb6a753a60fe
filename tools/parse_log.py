#!/usr/bin/env python
"""Parse a Caffe-style training log into two CSV files, <log>.train and <log>.test
(Caffe's tools/extra/parse_log.py).

    python tools/parse_log.py caffe_train.log out_dir/ [--delimiter ,] [--verbose]

Same as `pycaffe-lite parse_log`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycaffe_lite.cli import analysis  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    analysis.add_parse_log_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return analysis.parse_log_command(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"parse_log: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
