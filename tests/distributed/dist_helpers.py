"""Tiny nets, solvers and an LMDB for the distributed tests (shared by the tests and mpi_checks.py).

Launching ranks: `mpiexec(n, script, *args)` runs MPICH's mpiexec with each rank on one
thread (OPENBLAS_NUM_THREADS=1, NUMBA_NUM_THREADS=1), as every 1-vs-N comparison here does.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def mpi_unavailable():
    """Why MPI tests cannot run here (None when they can): mpi4py and an mpiexec beside it."""
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        return f"mpi4py is not installed (pip install -e '.[mpi]'): {exc}"
    if not mpiexec_path():
        return "no mpiexec found (the mpich wheel installs one: pip install -e '.[mpi]')"
    return None


def mpiexec_path():
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def rank_env(extra=None):
    env = dict(os.environ, **ONE_THREAD, PYTHONPATH=os.pathsep.join(
        p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p))
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def mpiexec(n, *command, timeout=120, env=None, launcher_args=(), **kw):
    """Run `command` as n ranks under mpiexec; returns the CompletedProcess (text)."""
    args = [mpiexec_path(), *launcher_args, "-n", str(n), *command]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=rank_env(env), check=False, **kw)


def make_db(path, n=48, shape=(2, 6, 6), classes=3, seed=0):
    """An LMDB of n uint8 Datums with labels 0..classes-1 (keys in record order)."""
    from pycaffe_lite.data import LMDBWriter, array_to_datum
    rng = np.random.default_rng(seed)
    with LMDBWriter(path) as db:
        for i in range(n):
            label = i % classes
            image = rng.integers(0, 120, size=shape) + 40 * label
            datum = array_to_datum(image.astype(np.uint8), label)
            db.put(f"{i:08d}".encode(), datum.SerializeToString())
    return path


def net_text(source, batch, test_source=None, test_batch=None):
    """Data -> Convolution -> ReLU -> InnerProduct -> SoftmaxWithLoss (+ Accuracy in TEST)."""
    test = ""
    if test_source:
        test = f'''
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{test_source}" batch_size: {test_batch} backend: LMDB }} }}'''
    return f'''name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}{test}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.3 }}
                       bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
'''


def solver_text(net_path, solver_type="SGD", layer_wise=True, max_iter=4, extra=""):
    rule = {"SGD": "momentum: 0.9", "Adam": "momentum: 0.9 momentum2: 0.999 delta: 1e-8"}[solver_type]
    return f'''net: "{net_path}"
type: "{solver_type}"
base_lr: 0.05
{rule}
weight_decay: 0.0005
lr_policy: "step" gamma: 0.5 stepsize: 2
max_iter: {max_iter}
display: 1
random_seed: 7
solver_mode: CPU
layer_wise_reduce: {"true" if layer_wise else "false"}
{extra}
'''


def weights_of(net):
    return {f"{name}/{i}": np.array(blob.data) for name, blobs in net.params.items() for i, blob in enumerate(blobs)}


def max_relative_difference(a, b):
    worst = 0.0
    for key in a:
        scale = max(float(np.abs(a[key]).max()), float(np.abs(b[key]).max()), 1e-12)
        worst = max(worst, float(np.abs(a[key] - b[key]).max()) / scale)
    return worst
