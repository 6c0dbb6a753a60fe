#!/usr/bin/env python
"""Draw a network prototxt as a graph (Caffe's python/draw_net.py).

    python tools/draw_net.py models/lenet/deploy.prototxt lenet.png [--rankdir TB] [--phase TRAIN] [--display_lrm]

PNG/SVG/PDF need Graphviz's `dot` (apt-get install graphviz); a .dot output
file gets the DOT text without it.  Same as `pycaffe-lite draw_net`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycaffe_lite.cli import analysis  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    analysis.add_draw_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return analysis.draw_command(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"draw_net: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
