"""Model zoo and transfer-learning subcommands:

    pycaffe-lite zoo list | info NAME | fetch NAME [--from FILE_OR_URL]
    pycaffe-lite surgery --model M --weights a.caffemodel[,b] --out W [--freeze ...] ...
    pycaffe-lite convert IN OUT [--model M]          (.caffemodel <-> .npz)
    pycaffe-lite convert IN OUT --binary --model M  (binary layers' weights as sign bits)
    pycaffe-lite convert IN.caffemodel OUT.caffemodel --fp16  (weights as FLOAT16 raw_data, half the size)
    pycaffe-lite export_onnx --model M --weights W --out model.onnx
    pycaffe-lite extract_features --model M --weights W --blobs fc7,pool5 --out f.npz --iterations N
    pycaffe-lite upgrade_net_proto_text IN OUT   (and upgrade_net_proto_binary, upgrade_solver_proto_text)
"""
import json
import logging
import os
import sys

from ._progress import add_quiet, progress_bar

log = logging.getLogger("pycaffe_lite")


def _split(text):
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _shape(text):
    try:
        dims = [int(d) for d in _split(text)]
    except ValueError:
        raise ValueError(f"shape '{text}' is not comma-separated integers like 1,3,451,451") from None
    if len(dims) != 4:
        raise ValueError(f"shape '{text}' needs 4 numbers: N,C,H,W")
    return dims


def _load_layers():
    import importlib
    importlib.import_module("pycaffe_lite.layers")


def _net(model, weights=None, phase="test"):
    _load_layers()
    from ..net import TEST, TRAIN, Net
    net = Net(model, phase=TEST if phase == "test" else TRAIN)
    if weights:
        for path in _split(weights):
            net.copy_from(path)
    return net


def _gpu(args):
    if getattr(args, "gpu", None) is not None:
        from .. import backend
        backend.set_mode_gpu()
        backend.set_device(int(args.gpu))


# ---------------------------------------------------------------------------- zoo
def cmd_zoo_list(args):
    from ..zoo.manifest import list_models
    models = list_models(args.root)
    rows = [("MODEL", "PARAMETERS", "WEIGHTS", "LICENSE")]
    for m in models:
        arch = m.architecture
        params = f"{arch.params / 1e6:.2f}M" if arch else "-"
        if m.weights_path.exists():
            weights = "present"
        elif m.url and m.sha1:
            weights = "fetch"
        elif m.sha1:
            weights = "--from FILE"
        elif m.url:
            weights = "manual"     # a link to a page, no digest to check a download against
        else:
            weights = "none"
        licence = (m.license or "-").split(" (")[0] if not m.error else "(readme has no front matter)"
        rows.append((m.name, params, weights, licence))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)))
    return 0


def cmd_zoo_info(args):
    from ..zoo.manifest import get_model
    m = get_model(args.name, args.root)
    arch = m.architecture
    if args.json:
        info = dict(m.meta, folder=str(m.folder), weights_present=m.weights_path.exists())
        if arch:
            info.update(parameters=arch.params, published=arch.published,
                        input_shape=list(arch.input_shape))
        print(json.dumps(info, indent=2))
        return 0
    print(f"{m.title}  [{m.name}]")
    for key in ("caffemodel", "caffemodel_url", "sha1", "license", "weights_from"):
        print(f"  {key + ':':16}{m.meta.get(key) or '-'}")
    if arch:
        print(f"  {'parameters:':16}{arch.params:,} (published: {arch.published})")
        print(f"  {'input:':16}{' x '.join(str(d) for d in arch.input_shape)}")
    for which in ("deploy", "train_val", "solver"):
        path = m.file(which)
        print(f"  {which + ':':16}{path if path else '-'}")
    present = m.weights_path.exists()
    print(f"  {'weights file:':16}{m.weights_path} ({'present' if present else 'absent'})")
    return 0


def cmd_zoo_fetch(args):
    from ..zoo.fetch import fetch_weights, sha1_of
    from ..zoo.manifest import get_model
    m = get_model(args.name, args.root)
    if args.no_verify:
        print("warning: --no-verify: the file's sha1 is not checked", file=sys.stderr)
    with progress_bar(args, f"{m.name}", unit="B", unit_scale=True) as progress:
        path = fetch_weights(m, source=args.source, dest=args.to, sha1=args.sha1,
                             verify=not args.no_verify, progress=progress)
    print(f"{m.name}: {path} (sha1 {sha1_of(path)})")
    return 0


# ---------------------------------------------------------------------------- surgery
def cmd_surgery(args):
    from ..io_utils import write_bytes_atomic
    from ..proto.files import read_net_param
    from ..proto.text import to_text
    from ..zoo import surgery
    from ..zoo.convert import arrays_to_weights, weights_to_arrays

    # Every argument is checked before anything is read or written: a failed command writes nothing.
    weights = _split(args.weights)
    edits_model = any([args.freeze, args.freeze_below, args.lr_mult, args.fc_to_conv,
                       args.input_channels is not None, args.input_shape])
    if edits_model and not args.out_model:
        raise ValueError("--out-model is needed to write the edited net definition")
    if (args.fc_to_conv or args.input_channels is not None) and not weights:
        raise ValueError("--fc-to-conv and --input-channels transform trained weights: give --weights")
    if weights and not args.out:
        raise ValueError(f"--weights {args.weights}: --out is needed to write the resulting weights "
                         "(for only the edited net definition, leave out --weights)")
    if args.out and not weights:
        raise ValueError(f"--out {args.out}: there are no weights to write without --weights")
    if args.map and not weights:
        raise ValueError(f"--map {args.map}: needs --weights to copy from")
    if args.map and (args.fc_to_conv or args.input_channels is not None):
        raise ValueError(f"--map {args.map}: not used by --fc-to-conv / --input-channels, which keep "
                         "the layers' names; copy under the new names in a separate surgery run")
    rename = {}
    for item in _split(args.map):
        new, sep, old = (part.strip() for part in item.partition("="))
        if not sep or not new or not old:
            raise ValueError(f"--map: expected NEW=OLD (target layer = layer in the weights), got '{item}'")
        rename[new] = old
    outputs = [path for path in (args.out_model, args.out, args.report) if path]
    if len(set(map(os.path.abspath, outputs))) != len(outputs):
        raise ValueError(f"--out, --out-model and --report must be different files: {', '.join(outputs)}")
    for path in outputs:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError(f"cannot write {path}: folder {folder} does not exist")
    net_param = read_net_param(args.model)
    out_weights = None
    report = None
    if args.fc_to_conv or args.input_channels is not None:
        arrays = collections_merge([weights_to_arrays(w) for w in weights])
        if args.fc_to_conv:
            net_param, arrays = surgery.fc_to_conv(net_param, arrays, layers=_split(args.layers) or None,
                                                   input_shape=_shape(args.input_shape)
                                                   if args.input_shape else None)
            print(f"fully connected -> convolution: "
                  f"{', '.join(n for n in arrays if n.endswith('-conv')) or 'nothing to convert'}")
        if args.input_channels is not None:
            net_param, arrays = surgery.set_input_channels(net_param, arrays, args.input_channels,
                                                           mode=args.channel_mode)
            print(f"first convolution now reads {args.input_channels} channel(s)")
        out_weights = arrays_to_weights(arrays, model=net_param)
    elif args.input_shape:
        surgery._set_input_shape(net_param, _shape(args.input_shape))
    if weights and out_weights is None:
        try:
            net = _net(args.deploy or net_param)
        except (FileNotFoundError, RuntimeError, OSError) as exc:
            raise ValueError(f"cannot build {args.model} to place the weights ({exc}); pass a deploy "
                             "net holding the same layers with --deploy") from None
        report = surgery.transplant(net, weights, rename=rename, strict=args.strict)
        out_weights = net.to_proto()
        new_layers = [n for n, why in report.reinitialised.items()]
    else:
        new_layers = []
    frozen = []
    if args.freeze:
        frozen += surgery.freeze(net_param, _split(args.freeze))
    if args.freeze_below:
        frozen += surgery.freeze_below(net_param, args.freeze_below)
    factors = {}
    if args.lr_mult:
        factors = surgery.apply_lr_mult(net_param, args.lr_mult, new_layers=new_layers,
                                        mid_from=args.mid_from)
    # Everything that can fail is done: now print and write.
    sharing = {n: surgery.sharing_layers(net_param, n) for n in list(frozen) + list(factors)}

    def shared(name):
        others = sharing[name]
        if not others:
            return name
        return f"{name} (and {', '.join(others)}, which share{'s' if len(others) == 1 else ''} its params)"
    if report is not None:
        print(report)
    if frozen:
        print(f"frozen (lr_mult 0): {', '.join(shared(n) for n in frozen)}")
    if factors:
        print("learning-rate multipliers: " + ", ".join(f"{shared(k)} x{v:g}" for k, v in factors.items()))
    payloads = []
    if args.out_model:
        payloads.append((args.out_model, to_text(net_param).encode("utf-8")))
    if out_weights is not None:
        payloads.append((args.out, out_weights.SerializeToString()))
    if args.report:
        payloads.append((args.report, json.dumps(dict(
            report.as_dict() if report else {}, frozen=frozen, lr_mult=factors,
            shared={n: others for n, others in sharing.items() if others}), indent=2).encode("utf-8")))
    for path, data in payloads:
        write_bytes_atomic(path, data)
        if path != args.report:
            print(f"wrote {path}")
    return 0


def collections_merge(dicts):
    """Later weight files override earlier ones, layer by layer (Caffe's --weights a,b)."""
    import collections
    merged = collections.OrderedDict()
    for d in dicts:
        merged.update(d)
    return merged


# ---------------------------------------------------------------------------- converters
def cmd_convert(args):
    from ..zoo.convert import convert
    if args.output.lower().endswith(".onnx"):
        if not args.model:
            raise ValueError("converting to ONNX needs the deploy net: --model deploy.prototxt")
        from ..zoo.onnx_export import save_onnx
        save_onnx(_net(args.model, args.input), args.output)
        print(f"wrote {args.output}")
        return 0
    if args.binary and args.fp16:
        raise ValueError("convert: --binary and --fp16 are two different outputs; choose one")
    if args.binary:
        return _convert_binary(args)
    if args.fp16:
        return _convert_fp16(args)
    convert(args.input, args.output, model=args.model)
    print(f"wrote {args.output}")
    return 0


def _convert_binary(args):
    """.caffemodel -> .caffemodel with the binary layers' weights as sign bits (32x smaller)."""
    from ..zoo.convert import save_packed
    if not args.model:
        raise ValueError("convert --binary needs the net: --model deploy.prototxt")
    report = save_packed(_net(args.model, args.input), args.output)
    if not report:
        raise ValueError(f"convert --binary: {args.model} has no binary layer (BinaryConvolution, "
                         "BinaryInnerProduct) whose weights could be packed")
    for name, floats, packed in report:
        print(f"{name}: {floats} bytes as float32 -> {packed} bytes packed ({floats / packed:.1f}x)")
    total_f, total_p = sum(r[1] for r in report), sum(r[2] for r in report)
    print(f"wrote {args.output}: binary weights {total_f} -> {total_p} bytes ({total_f / total_p:.1f}x)")
    return 0


def _convert_fp16(args):
    """.caffemodel -> .caffemodel with every blob as raw FLOAT16 (NVCaffe's raw_data; half the size)."""
    from ..zoo.convert import weights_to_fp16
    if args.input.lower().endswith((".npz", ".h5")) or args.output.lower().endswith((".npz", ".h5", ".onnx")):
        raise ValueError("convert --fp16 reads a .caffemodel and writes a .caffemodel")
    report = weights_to_fp16(args.input, args.output)
    before, after = sum(r[2] for r in report), sum(r[3] for r in report)
    print(f"wrote {args.output}: {len(report)} blobs, {before} -> {after} bytes as FLOAT16 raw_data"
          f"{f' ({before / after:.2f}x smaller)' if after else ''}")
    return 0


def cmd_export_onnx(args):
    from ..zoo.onnx_export import save_onnx
    net = _net(args.model, args.weights)
    if args.batch:
        for name in net.inputs:
            shape = list(net.blobs[name].shape)
            shape[0] = args.batch
            net.blobs[name].reshape(*shape)
        net.reshape()
    save_onnx(net, args.out)
    print(f"wrote {args.out} (inputs {', '.join(net.inputs)}; outputs {', '.join(net.outputs)})")
    return 0


def cmd_upgrade(args):
    from ..zoo import convert
    tool = {"upgrade_net_proto_text": convert.upgrade_net_proto_text,
            "upgrade_net_proto_binary": convert.upgrade_net_proto_binary,
            "upgrade_solver_proto_text": convert.upgrade_solver_proto_text}[args.command]
    tool(args.input, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_extract_features(args):
    from ..zoo.features import extract_features, save_features
    _gpu(args)
    net = _net(args.model, args.weights)
    blobs = _split(args.blobs)
    if not blobs:
        raise ValueError("--blobs names at least one blob, e.g. fc7,pool5")
    with progress_bar(args, "extract_features", unit="batch") as progress:
        features = extract_features(net, blobs, iterations=args.iterations, progress=progress)
    out = args.out if args.out.endswith(".npz") else _split(args.out)
    written = save_features(features, out if isinstance(out, str) or len(out) > 1 else out[0])
    for name, array in features.items():
        print(f"{name}: {array.shape[0]} x {' x '.join(str(d) for d in array.shape[1:]) or '1'}")
    print("wrote " + ", ".join(written))
    return 0


# ---------------------------------------------------------------------------- registration
def register(subparsers):
    zoo = subparsers.add_parser("zoo", help="list, describe and fetch the model zoo's weights")
    zoo.add_argument("--root",
                     help="the zoo folder (default: $PYCAFFE_LITE_MODELS, else the zoo shipped in the package)")
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo.set_defaults(func=lambda a: (zoo.print_help(), 1)[1])
    p = zsub.add_parser("list", help="the zoo's models")
    p.set_defaults(func=cmd_zoo_list)
    p = zsub.add_parser("info", help="one model's readme metadata and files")
    p.add_argument("name", help="model folder name, or a path to a folder with a readme.md")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_zoo_info)
    p = zsub.add_parser("fetch", help="download (or copy) a model's weights, checking their sha1")
    p.add_argument("name", help="model folder name, or a path to a folder with a readme.md")
    p.add_argument("--from", dest="source", metavar="FILE_OR_URL",
                   help="a local file or URL instead of the readme's caffemodel_url (works offline)")
    p.add_argument("--sha1", help="expect this sha1 instead of the readme's")
    p.add_argument("--no-verify", action="store_true", help="skip the sha1 check (not recommended)")
    p.add_argument("--to", help="destination file (default: the model folder; ./models/NAME/ for the shipped zoo)")
    add_quiet(p)
    p.set_defaults(func=cmd_zoo_fetch)

    s = subparsers.add_parser("surgery", help="copy weights by layer name, freeze layers, set lr "
                              "multipliers, cast fc layers as convolutions, change input channels")
    s.add_argument("--model", required=True, help="the target net (prototxt); a deploy net is cheapest")
    s.add_argument("--weights", help="caffemodel(s) to copy from, comma-separated (later ones win)")
    s.add_argument("--out", help="write the resulting weights here (.caffemodel)")
    s.add_argument("--out-model", help="write the edited net definition here (.prototxt)")
    s.add_argument("--deploy", help="build this net (e.g. deploy.prototxt) to place the weights when "
                   "--model reads data that is not there")
    s.add_argument("--map", help="target=source layer pairs to copy under another name, e.g. fc8_new=fc8")
    s.add_argument("--strict", action="store_true", help="a shape mismatch is an error (Caffe's rule)")
    s.add_argument("--freeze", help="layers to freeze (lr_mult 0), comma-separated")
    s.add_argument("--freeze-below", metavar="LAYER", help="freeze every learnable layer before LAYER")
    s.add_argument("--lr-mult", help="multipliers: top=10,mid=1,bottom=1/10 (top = new layers) "
                   "and/or LAYER=FACTOR")
    s.add_argument("--mid-from", metavar="LAYER", help="first layer of the 'mid' group (default: half way)")
    s.add_argument("--fc-to-conv", action="store_true", help="cast InnerProduct layers as Convolutions")
    s.add_argument("--layers", help="with --fc-to-conv: only these InnerProduct layers")
    s.add_argument("--input-shape", help="N,C,H,W for the Input layer of --out-model")
    s.add_argument("--input-channels", type=int, help="reshape the first convolution for C input channels")
    s.add_argument("--channel-mode", choices=("mean", "zero", "sum", "first"),
                   help="how --input-channels fills or folds channels (default: sum to 1, mean to add)")
    s.add_argument("--report", help="also write the report as JSON here")
    s.set_defaults(func=cmd_surgery)

    c = subparsers.add_parser("convert", help="convert weights: .caffemodel <-> .npz (layer/index arrays), "
                              "or .caffemodel -> .onnx with --model")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--model", help="with .npz -> .caffemodel: the prototxt whose layer definitions to write; "
                   "with .onnx or --binary: the deploy net")
    c.add_argument("--binary", action="store_true",
                   help=".caffemodel -> .caffemodel with the binary layers' weights as sign bits (32x smaller; "
                   "our BlobProto packed_signs field), loadable by our Net for packed inference")
    c.add_argument("--fp16", action="store_true",
                   help=".caffemodel -> .caffemodel with the weights as FLOAT16 (NVCaffe's raw_data, half the size), "
                   "as NVCaffe and OpenCV's shrinkCaffeModel write; loadable by our Net, NVCaffe and OpenCV's dnn")
    c.set_defaults(func=cmd_convert)

    o = subparsers.add_parser("export_onnx", help="export a deploy net and its weights to ONNX")
    o.add_argument("--model", required=True)
    o.add_argument("--weights", help="caffemodel(s), comma-separated")
    o.add_argument("--out", required=True)
    o.add_argument("--batch", type=int, help="batch size of the exported graph (default: the prototxt's)")
    o.set_defaults(func=cmd_export_onnx)

    for name, what in (("upgrade_net_proto_text", "a legacy net prototxt"),
                       ("upgrade_net_proto_binary", "a legacy binary net (.caffemodel)"),
                       ("upgrade_solver_proto_text", "a legacy solver prototxt")):
        u = subparsers.add_parser(name, help=f"upgrade {what} to the current format (Caffe's tool)")
        u.add_argument("input")
        u.add_argument("output")
        u.set_defaults(func=cmd_upgrade)

    e = subparsers.add_parser("extract_features", help="run a net and save chosen blobs (npz or LMDB)")
    e.add_argument("--model", required=True, help="a net with its own data layer (TEST phase)")
    e.add_argument("--weights", required=True)
    e.add_argument("--blobs", required=True, help="comma-separated blob names, e.g. fc7,pool5")
    e.add_argument("--out", required=True, help="features.npz, or LMDB paths (one per blob, comma-separated)")
    e.add_argument("--iterations", type=int, default=1, help="mini-batches to run")
    e.add_argument("--gpu", type=int, help="GPU id")
    add_quiet(e)
    e.set_defaults(func=cmd_extract_features)
