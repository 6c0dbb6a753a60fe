#!/usr/bin/env python
"""Transfer learning on the embedded digits: LeNet trained on digits 0-4,
fine-tuned to digits 5-9 from a small subset, against the same net trained
from scratch on that subset for the same number of iterations.

    python data/digits/build.py                  # once: the digits LMDBs
    python examples/finetune_digits/run.py       # about 10 minutes on two cores
    python examples/finetune_digits/run.py --keep --per-class 2   # reuse the 0-4 net

Both tasks train as models/lenet does, with small affine warps of the images
(`augmentation` in the prototxts' transform_param), so the 0-4 net learns
features that hold under the ways handwriting varies and the 5-9 nets see
more than their few images.  docs/finetuning.md has the figures, and why
without the warps fine-tuning only gives a head start on these digits.

Steps, each a `pycaffe-lite` command you could type yourself:
1. split data/digits into work/source_{train,test}_lmdb (digits 0-4) and
   work/target_{train,test}_lmdb (digits 5-9 stored as labels 0-4; the
   training set only `--per-class` images of each digit, drawn at random
   by each seed, the others testing);
2. `train --solver source_solver.prototxt` (LeNet, 5 outputs);
3. `surgery` shows what the 0-4 weights give the 5-9 net (conv1, conv2 and
   ip1 copied, the classifier `ip2_5to9` re-initialised, renamed from ip2)
   and writes two variants of the 5-9 net: Caffe's fine-tuning recipe, the
   copied layers learning at 1/10 of the rate of the new one (`--lr-mult`;
   the same updates as base_lr / 10 with the new layer at 10x), and the
   copied layers frozen (`--freeze-below ip2_5to9`);
4. for each seed (a subset and the initial weights of the new layers), with
   target_solver.prototxt (the 0-4 net's learning rate):
   from scratch; fine-tuned (`train --weights` the 0-4 net) with Caffe's
   recipe, at the full rate everywhere, and frozen;
5. print a table of test accuracies and write work/results.json.

Run from the repository root or anywhere.  The commands run on copies of the
example's nets and solvers that run.py writes into the work folder (`--work`,
examples/finetune_digits/work by default), pointing at the LMDBs there.
"""
import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = HERE / "work"                     # --work and --digits rebind these two
DIGITS = REPO / "data" / "digits"
sys.path.insert(0, str(REPO))

SOURCE_TEST, TARGET_TEST = 140, 840      # test images kept (batch 70 x 2 and 120 x 7 in the prototxts)
RECIPE = "conv1=1/10,conv2=1/10,ip1=1/10"  # the copied layers' learning rate, relative to the new layer


def cli(*args, log_name=None):
    """Run `pycaffe-lite ARGS` from the repository root; return its combined output."""
    command = [sys.executable, "-m", "pycaffe_lite.cli", *map(str, args)]
    result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log_name:
        (WORK / log_name).write_text(result.stdout)
    if result.returncode:
        sys.stdout.write(result.stdout[-3000:])
        raise SystemExit(f"failed: pycaffe-lite {' '.join(map(str, args))}")
    return result.stdout


def split(per_class, draw):
    """Digits 0-4 and 5-9 LMDBs from data/digits (labels 5-9 become 0-4).

    The 5-9 training subset is `per_class` images of each digit drawn at
    random (`draw` seeds the draw); the rest of them join the 5-9 test split
    as test images."""
    from pycaffe_lite.data.lmdb_io import LMDBWriter, iter_lmdb
    from pycaffe_lite.proto import caffe_pb2
    train_db, test_db = DIGITS / "digits_train_lmdb", DIGITS / "digits_test_lmdb"
    if not train_db.exists():
        raise SystemExit(f"{train_db} is missing: run `python data/digits/build.py`")

    def records(db):
        for key, value in iter_lmdb(db):
            datum = caffe_pb2.Datum()
            datum.ParseFromString(value)
            yield key, datum

    def write(path, items):
        with LMDBWriter(path, overwrite=True) as db:
            for index, (_key, datum) in enumerate(items):
                db.put(b"%08d" % index, datum.SerializeToString())

    def relabel(items, low):
        for key, datum in items:
            if low <= datum.label < low + 5:
                datum.label -= low
                yield key, datum

    source_train = list(relabel(records(train_db), 0))
    source_test = list(relabel(records(test_db), 0))[:SOURCE_TEST]
    candidates = list(relabel(records(train_db), 5))
    order = random.Random(draw).sample(range(len(candidates)), len(candidates))
    taken, chosen = {}, set()
    for i in order:
        label = candidates[i][1].label
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            chosen.add(i)
    target_train = [candidates[i] for i in sorted(chosen)]
    unused = [item for i, item in enumerate(candidates) if i not in chosen]
    # The target test set: the 5-9 test split and the 5-9 training images not in the subset.
    target_test = (list(relabel(records(test_db), 5)) + unused)[:TARGET_TEST]
    if len(source_test) < SOURCE_TEST or len(target_test) < TARGET_TEST:
        raise SystemExit("data/digits has fewer test images than this example expects")
    for name, items in (("source_train", source_train), ("source_test", source_test),
                        ("target_train", target_train), ("target_test", target_test)):
        write(WORK / f"{name}_lmdb", items)
    return {"source_train": len(source_train), "source_test": len(source_test),
            "target_train": len(target_train), "target_test": len(target_test)}


TEST_LINE = re.compile(r"Iteration (\d+), Testing net.*?Test net output #\d+: accuracy = ([0-9.eE+-]+)", re.S)


def test_accuracies(log):
    """[(iteration, accuracy)] from a Caffe-style training log."""
    out = []
    for block in re.split(r"(?=Iteration \d+, Testing net)", log):
        match = TEST_LINE.search(block)
        if match:
            out.append((int(match.group(1)), float(match.group(2))))
    return out


def net_copy(template):
    """work/<template's name>: the example's net reading its LMDBs from the work folder."""
    from pycaffe_lite.proto.files import read_net_param
    from pycaffe_lite.proto.text import write_text
    param = read_net_param(template)
    for layer in param.layer:
        if layer.type == "Data":
            layer.data_param.source = str(WORK / Path(layer.data_param.source).name)
    path = WORK / template.name
    write_text(path, param)
    return path


def solver_copy(template, name, seed, net, iterations=None, test_interval=None):
    """work/<name>_solver.prototxt: `template` with its own net, seed, snapshot prefix (and length)."""
    from pycaffe_lite.proto import caffe_pb2
    from pycaffe_lite.proto.text import parse_text, write_text
    solver = parse_text(template.read_text(), caffe_pb2.SolverParameter())
    solver.random_seed = seed
    solver.snapshot_prefix = str(WORK / name)
    solver.net = str(net)
    if iterations:
        solver.max_iter = iterations
    if test_interval:
        solver.test_interval = test_interval
    path = WORK / f"{name}_solver.prototxt"
    write_text(path, solver)
    return path


def main(argv=None):
    global WORK, DIGITS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=5, help="training images of each digit 5-9")
    parser.add_argument("--iterations", type=int, default=200, help="training iterations of the target runs")
    parser.add_argument("--test-interval", type=int, default=20, help="test every this many iterations")
    parser.add_argument("--source-iterations", type=int, default=800,
                        help="training iterations of the 0-4 net")
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,8,9,10",
                        help="random seeds of the target runs: each draws a subset and the initial weights")
    parser.add_argument("--keep", action="store_true", help="reuse work/ (and its 0-4 net) from an earlier run")
    parser.add_argument("--work", default=str(WORK), help="the folder for LMDBs, nets, logs and weights")
    parser.add_argument("--digits", default=str(DIGITS), help="where data/digits/build.py wrote the digits")
    args = parser.parse_args(argv)
    WORK, DIGITS = Path(args.work).resolve(), Path(args.digits).resolve()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if WORK.exists() and not args.keep:
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, exist_ok=True)

    counts = split(args.per_class, seeds[0])
    print(f"data: {counts}")
    source_net = net_copy(HERE / "source_train_test.prototxt")
    target_net = net_copy(HERE / "target_train_test.prototxt")
    source_weights = WORK / f"source_iter_{args.source_iterations}.caffemodel"
    if args.keep and source_weights.exists() and (WORK / "source.log").exists():
        out = (WORK / "source.log").read_text()      # reuse the 0-4 net of an earlier run
    else:
        solver = solver_copy(HERE / "source_solver.prototxt", "source", 1, source_net, args.source_iterations)
        out = cli("train", "--solver", solver, log_name="source.log")
    source_acc = test_accuracies(out)[-1][1]
    print(f"digits 0-4 net: test accuracy {source_acc:.3f} ({source_weights.name})")

    # What --weights will do, and the recipe's and the frozen variants of the target net, with `surgery`.
    surgery = cli("surgery", "--model", target_net, "--weights", source_weights,
                  "--out", WORK / "target_init.caffemodel", "--lr-mult", RECIPE,
                  "--out-model", WORK / "target_recipe_train_test.prototxt",
                  "--report", WORK / "surgery.json", log_name="surgery.log")
    print(surgery.strip())
    cli("surgery", "--model", target_net, "--weights", source_weights,
        "--out", WORK / "target_init.caffemodel", "--freeze-below", "ip2_5to9",
        "--out-model", WORK / "target_frozen_train_test.prototxt")

    runs = {"scratch": [], "finetune_recipe": [], "finetune": [], "finetune_frozen": []}
    nets = {"finetune_recipe": "target_recipe_train_test.prototxt",
            "finetune_frozen": "target_frozen_train_test.prototxt"}
    curves = {k: [] for k in runs}
    template = HERE / "target_solver.prototxt"
    for seed in seeds:
        split(args.per_class, seed)        # each seed draws its own subset (and initial weights)
        for variant in runs:
            net = WORK / nets[variant] if variant in nets else target_net
            solver = solver_copy(template, f"{variant}_seed{seed}", seed, net, args.iterations,
                                 args.test_interval)
            extra = [] if variant == "scratch" else ["--weights", source_weights]
            log = cli("train", "--solver", solver, *extra,
                      log_name=f"{variant}_seed{seed}.log")
            accs = test_accuracies(log)
            runs[variant].append(accs[-1][1])
            curves[variant].append(accs)
    iterations = [it for it, _ in curves["scratch"][0]]
    print(f"\ndigits 5-9 from {counts['target_train']} training images ({args.per_class} per digit, "
          f"drawn by each seed), "
          f"{iterations[-1]} iterations, test accuracy on {counts['target_test']} images, seeds {seeds}:")
    print(f"| {'run':<16} | " + " | ".join(f"iter {it:>3}" for it in iterations) + " | final (min-max) |")
    print("|" + "-" * 18 + "|" + "|".join("-" * 10 for _ in iterations) + "|" + "-" * 17 + "|")
    table = {}
    for variant, finals in runs.items():
        mean_curve = [statistics.mean(c[i][1] for c in curves[variant]) for i in range(len(iterations))]
        table[variant] = {"final_mean": statistics.mean(finals), "final_min": min(finals),
                          "final_max": max(finals), "curve": dict(zip(iterations, mean_curve)),
                          "finals": finals}
        print(f"| {variant:<16} | " + " | ".join(f"{a:8.3f}" for a in mean_curve)
              + f" | {min(finals):.3f}-{max(finals):.3f} |")
    # Where is each fine-tuned variant ahead? (mean over seeds; and the seeds it wins at the end)
    results = {"counts": counts, "per_class": args.per_class, "seeds": seeds,
               "source_accuracy": source_acc, "target": table,
               "surgery": json.loads((WORK / "surgery.json").read_text())}
    scratch = table["scratch"]
    print()
    for variant in ("finetune_recipe", "finetune", "finetune_frozen"):
        row = table[variant]
        ahead = [it for it in iterations[1:] if row["curve"][it] > scratch["curve"][it]]
        won = sum(f > s for f, s in zip(row["finals"], scratch["finals"]))
        results[f"{variant}_ahead_at"] = ahead
        results[f"{variant}_won_seeds"] = won
        print(f"{variant}: ahead of from-scratch (mean over seeds) at iterations {ahead or 'none'}; "
              f"after {iterations[-1]}: {row['final_mean']:.3f} against {scratch['final_mean']:.3f}, "
              f"better on {won} of {len(seeds)} seeds")
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results in {WORK / 'results.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
