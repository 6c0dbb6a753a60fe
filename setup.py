"""pycaffe_lite: Caffe's workflow in Python (prototxt nets and solvers, BVLC-compatible files).

`python -m build` makes the sdist and, from it, the wheel: the package (with the generated
caffe_pb2 and the zoo's prototxts and readmes as package data) and the `pycaffe-lite` script.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# the version is written once, in pycaffe_lite/__init__.py (read, not imported: importing needs the dependencies)
INIT = (HERE / "pycaffe_lite" / "__init__.py").read_text(encoding="utf-8")
VERSION = re.search(r'^__version__ = "([^"]+)"', INIT, re.MULTILINE).group(1)
README = HERE / "README.md"

setup(
    name="pycaffe-lite",
    version=VERSION,
    description="Caffe's workflow in Python: prototxt nets and solvers, BVLC-compatible weights, NumPy/CuPy",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    license="BSD-2-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["pycaffe_lite", "pycaffe_lite.*"]),
    # the zoo: each model's prototxts and readme; never weights or snapshots (training in the clone
    # writes them beside the prototxts)
    package_data={"pycaffe_lite.zoo": ["models/*/*.prototxt", "models/*/*.md"]},
    include_package_data=False,
    install_requires=[
        "numpy>=2.0",            # NumPy 2's OpenBLAS knows this CPU generation (see DESIGN.md)
        "protobuf>=7.35.1",      # the runtime the generated caffe_pb2 asks for
        "lmdb>=1.4",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "scipy>=1.11",
        "numba>=0.60",
        "scikit-learn>=1.3",     # the embedded digits set
        "tqdm>=4.66",            # progress bars on a terminal
    ],
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        "hdf5": ["h5py>=3"],
        "draw": ["pydot>=2"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "plot": ["matplotlib>=3.7"],
        "tensorboard": ["tensorboardX>=2.6"],   # train --tensorboard writes event files through it
        # data-parallel training over MPI: MPICH's wheel (mpiexec and libmpi) and mpi4py, which
        # finds the wheel's libmpi at run time (mpi4py >= 4 speaks the MPI ABI)
        "mpi": ["mpich>=4.3", "mpi4py>=4.0"],
        # build: tests/packaging builds the wheel; tensorboard: its EventAccumulator reads the events back;
        # ruff: tests/test_lint.py (pinned: a newer ruff may add findings under the same rule set)
        "test": ["pytest>=8", "hypothesis>=6.100", "grpcio-tools==1.85.1", "h5py>=3", "pydot>=2", "matplotlib>=3.7",
                 "onnx>=1.15", "onnxruntime>=1.17", "build>=1.2", "tensorboardX>=2.6", "tensorboard>=2.14",
                 "mpich>=4.3", "mpi4py>=4.0", "ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["pycaffe-lite = pycaffe_lite.cli:main"]},
)
