"""`pycaffe-lite summarize | parse_log | plot_training_log | draw_net`: looking at nets and runs.

    pycaffe-lite summarize --model models/bvlc_reference_caffenet/deploy.prototxt [--batch 1] [--json]
    pycaffe-lite parse_log caffe_train.log out_dir/            # out_dir/caffe_train.log.train, .test
    pycaffe-lite plot_training_log caffe_train.log --output curves.png [--x seconds]
    pycaffe-lite draw_net lenet.prototxt lenet.png [--rankdir TB] [--phase TRAIN]
"""
import json
import os


_DATA_TYPES = {"Data", "ImageData", "HDF5Data", "WindowData"}


def _phase(name):
    from ..proto import caffe_pb2
    return {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}.get(name.upper())


# ---- summarize ------------------------------------------------------------------
def summarize_command(args):
    from ..analysis.summary import format_summary, summarize, summary_to_dict
    from ..net import build_net_for_shapes
    phase = _phase(args.phase)
    if phase is None:
        raise ValueError(f"--phase must be TRAIN or TEST, got {args.phase!r}")
    try:
        net = build_net_for_shapes(args.model, phase=phase, level=args.level, stages=args.stage or (),
                                   allow_python=args.allow_python or None)
    except (ValueError, OSError, RuntimeError) as exc:
        from ..proto.files import read_net_param
        try:
            data_layers = [layer.name for layer in read_net_param(args.model).layer if layer.type in _DATA_TYPES]
        except (ValueError, OSError):
            data_layers = []
        if not data_layers:
            raise
        message = (f"{exc}\n(summarize builds the net, so its data layers ({', '.join(dict.fromkeys(data_layers))}) "
                   "must open their sources from the current directory; or give the deploy prototxt, whose "
                   "Input layers need nothing)")
        try:
            hinted = type(exc)(message)
        except Exception:  # an exception type with its own constructor
            hinted = RuntimeError(message)
        raise hinted from exc
    summary = summarize(net, batch=args.batch)
    if args.json:
        print(json.dumps(summary_to_dict(summary), indent=1))
    else:
        print(format_summary(summary))
    return 0


# ---- parse_log --------------------------------------------------------------------
def parse_log_command(args):
    from ..analysis.parse_log import parse_log, save_csv_files
    if not os.path.isfile(args.logfile_path):
        raise FileNotFoundError(f"no log file {args.logfile_path}")
    os.makedirs(args.output_dir, exist_ok=True)
    train, test = parse_log(args.logfile_path)
    written = save_csv_files(args.logfile_path, args.output_dir, train, test, delimiter=args.delimiter,
                             verbose=args.verbose)
    if not written:
        raise ValueError(f"{args.logfile_path}: no 'Train net output' or 'Test net output' lines found")
    print(f"{len(train)} train rows, {len(test)} test rows -> " + ", ".join(written))
    return 0


# ---- plot_training_log -------------------------------------------------------------
def plot_command(args):
    from ..analysis.plot import plot_chart, plot_training_log
    for path in args.logs:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no log file {path}")
    if args.chart is not None:
        written = plot_chart(args.chart, args.output, args.logs)
    else:
        written = plot_training_log(args.logs, args.output, x=args.x)
    print(f"Wrote {written}")
    return 0


# ---- draw_net -----------------------------------------------------------------------
def draw_command(args):
    from ..pycaffe import draw
    from ..proto.files import read_net_param
    net = read_net_param(args.input_net_proto_file)
    phase = None if args.phase.upper() == "ALL" else _phase(args.phase)
    if phase is None and args.phase.upper() != "ALL":
        raise ValueError(f"--phase must be TRAIN, TEST or ALL, got {args.phase!r}")
    ext = os.path.splitext(args.output_image_file)[1].lstrip(".").lower() or "png"
    if ext not in draw.TEXT_FORMATS and not draw.dot_available():
        raise RuntimeError(draw.INSTALL_HINT)
    print(f"Drawing net to {args.output_image_file}")
    draw.draw_net_to_file(net, args.output_image_file, args.rankdir, phase, args.display_lrm)
    return 0


def add_draw_arguments(parser):
    parser.add_argument("input_net_proto_file", help="input network prototxt file")
    parser.add_argument("output_image_file", help="output image file (.png, .svg, .pdf, ...; .dot for the DOT text)")
    parser.add_argument("--rankdir", default="LR",
                        help="graph direction: LR (left-right, default), TB (top-bottom), BT or RL")
    parser.add_argument("--phase", default="ALL", help="which phase's layers to draw: TRAIN, TEST or ALL (default)")
    parser.add_argument("--display_lrm", action="store_true",
                        help="show the learning-rate multipliers of Convolution, Deconvolution and InnerProduct")


def add_parse_log_arguments(parser):
    parser.add_argument("logfile_path", help="path to the log file")
    parser.add_argument("output_dir", help="directory in which to place the output CSV files")
    parser.add_argument("--verbose", action="store_true", help="print the output file names")
    parser.add_argument("--delimiter", default=",", help="column delimiter in the output files (default ',')")


def add_plot_arguments(parser):
    parser.add_argument("logs", nargs="+", help="training log(s) written by caffe or pycaffe-lite train")
    parser.add_argument("--output", "-o", required=True, help="PNG file to write")
    parser.add_argument("--x", default="iters", choices=("iters", "seconds"),
                        help="horizontal axis: iterations (default) or seconds since Solving")
    parser.add_argument("--chart", type=int, default=None,
                        help="one of Caffe's chart types instead: 0 test accuracy/iters, 1 /seconds, "
                             "2 test loss/iters, 3 /seconds, 4 train lr/iters, 5 /seconds, "
                             "6 train loss/iters, 7 /seconds")


def register(subparsers):
    p = subparsers.add_parser("summarize", help="per-layer shapes, parameters, multiply-adds, receptive fields, "
                                                 "activation memory of a net")
    p.add_argument("--model", required=True, help="net prototxt (a deploy net, or any net whose data layers "
                                                  "can be opened)")
    p.add_argument("--phase", default="TEST", help="TRAIN or TEST (default)")
    p.add_argument("--level", type=int, default=0, help="net state level")
    p.add_argument("--stage", action="append", help="net state stage (repeatable)")
    p.add_argument("--batch", type=int, default=None, help="reshape the inputs to this batch size first")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--allow-python", action="store_true", help="allow Python layers (runs their modules)")
    p.set_defaults(func=summarize_command)

    p = subparsers.add_parser("parse_log", help="Caffe-style training log -> CSV of train and test rows")
    add_parse_log_arguments(p)
    p.set_defaults(func=parse_log_command)

    p = subparsers.add_parser("plot_training_log", help="plot loss and accuracy from training logs to a PNG")
    add_plot_arguments(p)
    p.set_defaults(func=plot_command)

    p = subparsers.add_parser("draw_net", help="draw a net prototxt as a graph (PNG/SVG via Graphviz)")
    add_draw_arguments(p)
    p.set_defaults(func=draw_command)
