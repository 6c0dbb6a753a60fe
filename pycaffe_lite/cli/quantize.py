"""`pycaffe-lite quantize`: Ristretto's `ristretto quantize` (pycaffe_lite/precision/ristretto.py).

    pycaffe-lite quantize --model lenet_train_test.prototxt --weights lenet.caffemodel \\
        --model_quantized lenet_quantized.prototxt --trimming_mode dynamic_fixed_point \\
        --error_margin 1 --iterations 100 [--gpu 0]
"""


def cmd_quantize(args):
    from ..precision.ristretto import Quantization
    from .train import caffe_logging, parse_gpus, use_device
    for flag in ("model", "weights", "model_quantized", "trimming_mode"):
        if not getattr(args, flag):
            raise ValueError(f"Need --{flag} (ristretto quantize's flags: --model, --weights, "
                             "--model_quantized, --trimming_mode)")
    with caffe_logging(args.log):
        use_device(parse_gpus(args.gpu), single=True)
        summary = Quantization(args.model, args.weights, args.model_quantized, args.iterations,
                               args.trimming_mode, args.error_margin).quantize_net()
    print("\n".join(summary))
    return 0


def register(subparsers):
    p = subparsers.add_parser("quantize", help="find the bit widths a trained net keeps its accuracy with "
                                               "(Ristretto's tool) and write the quantized prototxt")
    p.add_argument("--model", help="the model definition (a train_val prototxt with TRAIN and TEST data)")
    p.add_argument("--weights", help="the trained weights")
    p.add_argument("--model_quantized", help="where to write the quantized net")
    p.add_argument("--trimming_mode", help="dynamic_fixed_point, minifloat or integer_power_of_2_weights")
    p.add_argument("--iterations", type=int, default=50, help="TEST batches per score (default 50)")
    p.add_argument("--error_margin", type=float, default=2.0,
                   help="the accuracy drop allowed, in percent (default 2)")
    p.add_argument("--gpu", default="", help="run on the given device id")
    p.add_argument("--log", help="also write the log to this file")
    p.set_defaults(func=cmd_quantize)
