"""Ctrl-C while `pycaffe-lite` is still importing (NumPy, Numba, the layers: a few seconds) ends with one
line and exit status 130, not a traceback from inside an import.  The package's __init__ imports this
module first thing, which calls `quiet_interrupts()` when the process is the command line; `main()` takes
over with `interrupts_raise()`, from which on Ctrl-C and SIGTERM raise KeyboardInterrupt for main to report."""
import os
import signal
import sys
import threading

COMMANDS = ("pycaffe_lite.cli", "pycaffe_lite.run")


def is_command_line():
    """True when this process runs `pycaffe-lite` or `python -m pycaffe_lite.cli | pycaffe_lite.run`."""
    argv = getattr(sys, "orig_argv", None) or []
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in COMMANDS:
        return True
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "pycaffe-lite"


def _exit_quietly(signum, frame):
    os.write(2, b"pycaffe-lite: interrupted\n")
    os._exit(130)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _install(handler):
    if threading.current_thread() is not threading.main_thread():
        return {}
    names = [name for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)]
    return {name: signal.signal(getattr(signal, name), handler) for name in names}


def quiet_interrupts():
    if is_command_line():
        _install(_exit_quietly)


def interrupts_raise():
    """Ctrl-C and SIGTERM raise KeyboardInterrupt (training installs its own handlers on top)."""
    return _install(_interrupt)


quiet_interrupts()
