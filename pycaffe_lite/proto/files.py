"""Caffe's files read into messages: prototxt (text) and binary protos, nets and trained weights
upgraded from legacy formats as Caffe's ReadNetParamsFrom*OrDie, solvers as ReadSolverParamsFromTextFileOrDie.
Errors name the file (and, for text, the line and column)."""
import os

from . import caffe_pb2, upgrade
from .text import parse_text


def _read(path, mode):
    try:
        with open(path, mode) as handle:
            return handle.read()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {path}: {exc.strerror}") from None


def read_text_proto(path, message):
    """Parse a text-format protobuf file; errors name the file, line and column."""
    return parse_text(_read(path, "r"), message, path)


def read_binary_proto(path, message):
    try:
        message.ParseFromString(_read(path, "rb"))
    except Exception as exc:  # protobuf's DecodeError
        raise ValueError(f"{path}: not a binary {message.DESCRIPTOR.name} ({exc})") from None
    return message


def upgraded_net(param, source):
    """`param`, upgraded in place from legacy formats if it needs it (Caffe's UpgradeNetAsNeeded)."""
    if upgrade.net_needs_upgrade(param):
        upgrade.upgrade_net(param, str(source))
    return param


def read_net_param(path):
    """A NetParameter from a prototxt, upgraded from legacy formats."""
    path = os.fspath(path)
    return upgraded_net(read_text_proto(path, caffe_pb2.NetParameter()), path)


def read_solver_param(path):
    param = read_text_proto(os.fspath(path), caffe_pb2.SolverParameter())
    upgrade.upgrade_solver(param)
    return param


def read_weights(path):
    """A trained NetParameter (.caffemodel), upgraded from legacy formats."""
    path = os.fspath(path)
    return upgraded_net(read_binary_proto(path, caffe_pb2.NetParameter()), path)
