"""`python -m pycaffe_lite.run script.py [args]`: pycaffe-lite run (cli/run.py) for a Python without the
console script: the script runs as __main__ with `import caffe` giving pycaffe_lite."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["run"] + sys.argv[1:]))
