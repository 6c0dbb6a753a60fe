"""pycaffe_lite: Caffe's workflow in Python (prototxt nets and solvers, BVLC-compatible files)."""
from setuptools import find_packages, setup

setup(
    name="pycaffe-lite",
    version="0.1.0",
    description="Caffe's workflow in Python: prototxt nets and solvers, BVLC-compatible weights, NumPy/CuPy",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="BSD-2-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["pycaffe_lite", "pycaffe_lite.*"]),
    install_requires=[
        "numpy>=2.0",            # NumPy 2's OpenBLAS knows this CPU generation (see DESIGN.md)
        "protobuf>=7.35.1",      # the runtime the generated caffe_pb2 asks for
        "lmdb>=1.4",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "scipy>=1.11",
        "numba>=0.60",
        "scikit-learn>=1.3",     # the embedded digits set
    ],
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        "hdf5": ["h5py>=3"],
        "draw": ["pydot>=2"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "plot": ["matplotlib>=3.7"],
        "test": ["pytest>=8", "grpcio-tools==1.85.1", "h5py>=3", "pydot>=2", "matplotlib>=3.7",
                 "onnx>=1.15", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": ["pycaffe-lite = pycaffe_lite.cli:main"]},
)
