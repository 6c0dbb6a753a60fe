#!/usr/bin/env python
"""Plot training logs to a PNG (Caffe's tools/extra/plot_training_log.py.example).

Caffe's form, a numbered chart type:
    python tools/plot_training_log.py 6 train_loss.png caffe_train.log [more.log ...]
      0: Test accuracy vs. Iters   1: vs. Seconds   2: Test loss vs. Iters   3: vs. Seconds
      4: Train learning rate vs. Iters  5: vs. Seconds  6: Train loss vs. Iters  7: vs. Seconds
Or all curves at once (train/test loss, test accuracy):
    python tools/plot_training_log.py caffe_train.log --output curves.png [--x seconds]

Same as `pycaffe-lite plot_training_log`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycaffe_lite.cli import analysis  # noqa: E402


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 3 and argv[0].isdigit() and argv[1].endswith(".png"):
        # Caffe's positional form: chart_type png log...
        argv = argv[2:] + ["--chart", argv[0], "--output", argv[1]]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    analysis.add_plot_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return analysis.plot_command(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"plot_training_log: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
