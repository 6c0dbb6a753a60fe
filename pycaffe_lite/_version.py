"""The package's version, in one place: setup.py reads this line, `pycaffe_lite.__version__` imports it."""
__version__ = "0.1.0"
