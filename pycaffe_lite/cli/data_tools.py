"""Dataset subcommands, with the flags of BVLC Caffe's tools:

    pycaffe-lite convert_imageset [--gray] [--shuffle] [--resize_height=N] [--resize_width=N]
                                  [--encoded] [--encode_type=jpg] [--backend=lmdb] ROOTFOLDER/ LISTFILE DB_NAME
    pycaffe-lite compute_image_mean [--backend=lmdb] INPUT_DB [OUTPUT_FILE]
    pycaffe-lite convert_mnist [--backend=lmdb] IMAGE_FILE LABEL_FILE DB_NAME
    pycaffe-lite compute_pca_lighting [--max_images=N] [--pixels_per_image=N] INPUT_DB OUTPUT_YAML

Flags may be written as gflags accepts them: --gray, -gray, --gray=true.
"""
import argparse

from ._progress import add_quiet, progress_bar

_TRUE = ("true", "1", "t", "yes", "y")
_FALSE = ("false", "0", "f", "no", "n")


class _SetBool(argparse.Action):
    def __init__(self, option_strings, dest, value=True, **kwargs):
        self.value = value
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.value)


def _flag(parser, name, kind, default, help_text):
    """A gflags-style flag: --name VALUE, --name=VALUE, -name=VALUE; bools also bare, --noname,
    --name=true/false (gflags never lets a bool take the next word as its value)."""
    if kind is bool:
        parser.add_argument(f"--{name}", f"-{name}", dest=name, action=_SetBool, value=True,
                            default=default, help=help_text)
        hidden = [f"{dash}no{name}" for dash in ("--", "-")]
        parser.add_argument(*hidden, dest=name, action=_SetBool, value=False, help=argparse.SUPPRESS)
        for words, value in ((_TRUE, True), (_FALSE, False)):
            spelled = [f"{dash}{name}={w}" for dash in ("--", "-") for w in words]
            parser.add_argument(*spelled, dest=name, action=_SetBool, value=value, help=argparse.SUPPRESS)
    else:
        parser.add_argument(f"--{name}", f"-{name}", dest=name, type=kind, default=default, help=help_text)


def _user_errors(func):
    def run(args):
        try:
            return func(args)
        except (FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise RuntimeError(str(exc)) from exc
    return run


@_user_errors
def _convert_imageset(args):
    from ..data.convert import convert_imageset
    with progress_bar(args, "convert_imageset", unit="img") as progress:
        convert_imageset(args.root_folder, args.list_file, args.db_name, gray=args.gray, shuffle=args.shuffle,
                         resize_height=args.resize_height, resize_width=args.resize_width,
                         check_size=args.check_size, encoded=args.encoded, encode_type=args.encode_type,
                         backend=args.backend, seed=args.seed, progress=progress)
    return 0


@_user_errors
def _compute_image_mean(args):
    from ..data.convert import compute_image_mean
    if args.backend.lower() != "lmdb":
        raise ValueError(f"backend '{args.backend}' is not supported; pycaffe_lite reads lmdb")
    with progress_bar(args, "compute_image_mean", unit="img") as progress:
        compute_image_mean(args.input_db, args.output_file, progress=progress)
    return 0


@_user_errors
def _convert_mnist(args):
    from ..data.convert import convert_mnist
    convert_mnist(args.image_file, args.label_file, args.db_name, backend=args.backend)
    return 0


@_user_errors
def _compute_pca_lighting(args):
    from ..data.pca import compute_pca_lighting
    with progress_bar(args, "compute_pca_lighting", unit="img") as progress:
        compute_pca_lighting(args.input_db, args.output_file, max_images=args.max_images,
                             pixels_per_image=args.pixels_per_image, seed=args.seed, progress=progress)
    return 0


def register(subparsers):
    p = subparsers.add_parser(
        "convert_imageset", aliases=["convert-imageset"],
        help="convert a set of images to an LMDB of Datums (as Caffe's convert_imageset)",
        description="Convert images listed in LISTFILE (lines 'subfolder/file.jpg label', paths relative to "
                    "ROOTFOLDER, which is prepended as given) to an LMDB of Datums with keys "
                    "'%08d_<path>'. The database is built in a temporary folder and renamed into place.")
    _flag(p, "gray", bool, False, "When this option is on, treat images as grayscale ones")
    _flag(p, "shuffle", bool, False, "Randomly shuffle the order of images and their labels")
    _flag(p, "backend", str, "lmdb", "The backend {lmdb} for storing the result")
    _flag(p, "resize_width", int, 0, "Width images are resized to")
    _flag(p, "resize_height", int, 0, "Height images are resized to")
    _flag(p, "check_size", bool, False, "When this option is on, check that all the datum have the same size")
    _flag(p, "encoded", bool, False, "When this option is on, the encoded image will be save in datum")
    _flag(p, "encode_type", str, "", "Optional: What type should we encode the image as ('png','jpg',...).")
    _flag(p, "seed", int, None, "Seed of --shuffle (pycaffe_lite; default: random)")
    p.add_argument("root_folder", metavar="ROOTFOLDER/")
    p.add_argument("list_file", metavar="LISTFILE")
    p.add_argument("db_name", metavar="DB_NAME")
    add_quiet(p)
    p.set_defaults(func=_convert_imageset)

    p = subparsers.add_parser(
        "compute_image_mean", aliases=["compute-image-mean"],
        help="compute the mean image of an LMDB into a .binaryproto (as Caffe's compute_image_mean)")
    _flag(p, "backend", str, "lmdb", "The backend {lmdb} for the input")
    p.add_argument("input_db", metavar="INPUT_DB")
    p.add_argument("output_file", metavar="OUTPUT_FILE", nargs="?")
    add_quiet(p)
    p.set_defaults(func=_compute_image_mean)

    p = subparsers.add_parser(
        "convert_mnist", aliases=["convert_mnist_data", "convert-mnist"],
        help="convert MNIST IDX files (optionally .gz) to an LMDB (as Caffe's convert_mnist_data)")
    _flag(p, "backend", str, "lmdb", "The backend {lmdb} for storing the result")
    p.add_argument("image_file", metavar="INPUT_IMAGE_FILE")
    p.add_argument("label_file", metavar="INPUT_LABEL_FILE")
    p.add_argument("db_name", metavar="OUTPUT_DB")
    p.set_defaults(func=_convert_mnist)

    p = subparsers.add_parser(
        "compute_pca_lighting", aliases=["compute-pca-lighting"],
        help="PCA of the pixel colours of an LMDB, for the 'lighting' augmentation (AlexNet)",
        description="Eigenvalues and eigenvectors of the covariance of the pixel values (0..255, channel "
                    "order as stored) over the images of INPUT_DB, written as YAML for "
                    "transform_param { augmentation { lighting { pca_file } } }.")
    _flag(p, "max_images", int, 0, "Use at most this many images (0: all)")
    _flag(p, "pixels_per_image", int, 0, "Sample this many pixels per image (0: all)")
    _flag(p, "seed", int, 0, "Seed of the pixel sampling")
    p.add_argument("input_db", metavar="INPUT_DB")
    p.add_argument("output_file", metavar="OUTPUT_YAML")
    add_quiet(p)
    p.set_defaults(func=_compute_pca_lighting)
