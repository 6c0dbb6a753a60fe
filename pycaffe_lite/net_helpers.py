"""pycaffe's conveniences over a Net (forward_all, set_input_arrays, ...)."""


class NetHelpersMixin:
    """Methods pycaffe adds to caffe.Net in python/caffe/pycaffe.py."""
