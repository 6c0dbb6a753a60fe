"""`pycaffe-lite example NAME DIR`: a zoo model and its embedded data, ready to train, without the clone.

    pycaffe-lite example lenet work       # work/models/lenet/*, work/data/digits/digits_{train,test}_lmdb
    cd work && pycaffe-lite train --solver models/lenet/lenet_solver.prototxt

The prototxts' paths are relative to the working directory (Caffe's rule), laid out as in the
clone, so the train command runs from DIR (see pycaffe_lite.zoo.example).
"""


def cmd_example(args):
    from ..zoo.example import write_example
    made = write_example(args.name, args.dir, root=args.root, force=args.force)
    print(f"wrote {made.model_folder}")
    for path in made.data:
        print(f"wrote {path}")
    if not made.data:
        print(f"(its nets read data the package does not embed: see {made.model_folder / 'readme.md'})")
    print("train it:")
    print(f"  {made.train_command}")
    return 0


def register(subparsers):
    p = subparsers.add_parser("example", help="write a zoo model's folder and its embedded data set into "
                              "a directory, and print the command that trains it")
    p.add_argument("name", help="zoo model (e.g. lenet, whose digits set the package builds)")
    p.add_argument("dir", help="directory to write into (created if need be); the train command runs from it")
    p.add_argument("--root", help="the zoo folder (default: $PYCAFFE_LITE_MODELS, else the zoo shipped in "
                   "the package)")
    p.add_argument("--force", action="store_true", help="overwrite files that differ and rebuild the data")
    p.set_defaults(func=cmd_example)
