"""`pycaffe-lite run script.py [args]` (also `python -m pycaffe_lite.run script.py [args]`): run a script
written for pycaffe unchanged.  `caffe` is aliased to pycaffe_lite first (pycaffe_lite.alias_as_caffe), so
`import caffe`, `from caffe import layers as L, params as P` and `from caffe.proto import caffe_pb2` work;
then the script runs as `__main__` with sys.argv = [script, args...] and its folder first on sys.path,
as `python script.py args` would run it.  Its exit status is the command's."""
import argparse
import os
import runpy
import sys
import traceback


def cmd_run(args):
    from .. import alias_as_caffe
    alias_as_caffe()
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        raise FileNotFoundError(f"no script {args.script}")
    sys.argv = [args.script] + list(args.args)
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        raise
    except BaseException:   # the script's own error: its traceback, as python prints it
        traceback.print_exc()
        return 1
    return 0


def register(subparsers):
    p = subparsers.add_parser("run", help="run a pycaffe script unchanged (import caffe gives pycaffe_lite)",
                              description="Run a Python script written for pycaffe as __main__, with `caffe` "
                                          "aliased to pycaffe_lite first.")
    p.add_argument("script", help="the Python script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    p.set_defaults(func=cmd_run)
