"""Caffe's protobuf schema for pycaffe_lite.

``from pycaffe_lite.proto import caffe_pb2`` mirrors pycaffe's
``from caffe.proto import caffe_pb2``.  ``caffe_pb2`` is generated from
``proto/caffe.proto`` at the repository root by ``python -m
pycaffe_lite.proto.build`` and committed, so no protoc is needed at run time.
"""

from . import caffe_pb2  # noqa: F401

__all__ = ["caffe_pb2"]
