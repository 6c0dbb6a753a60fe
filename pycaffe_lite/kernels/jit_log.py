"""The one-time Numba compile, said aloud.

The CPU kernels are Numba functions compiled at their first call; cache=True keeps the machine
code in Numba's cache, so only a machine's first run pays (about 9 s for LeNet on 2 cores).  A
listener on Numba's "numba:compile" event, which fires on a cache miss only, says so when the
first compile starts; report_jit_compiles() says once, at the first point its caller chooses (the
Solver after an iteration, `pycaffe-lite test` after a batch), how many kernels compiled and how
long they took.  The Net starts the listener (watch_jit_compiles) when it is built.
"""
import logging
import time

log = logging.getLogger("pycaffe_lite.kernels")
_jit = {"watching": False, "depth": 0, "started": 0.0, "seconds": 0.0, "count": 0, "reported": False}


def watch_jit_compiles():
    """Start listening to Numba's compiles (once per process; nothing without Numba)."""
    if _jit["watching"]:
        return
    _jit["watching"] = True
    try:
        from numba.core import event
    except ImportError:
        return

    class CompileListener(event.Listener):
        def on_start(self, ev):
            if _jit["depth"] == 0:
                if _jit["count"] == 0:
                    log.info("Compiling the Numba CPU kernels (once for this machine: Numba caches them "
                             "for later runs)...")
                _jit["started"] = time.perf_counter()
            _jit["depth"] += 1

        def on_end(self, ev):
            _jit["depth"] -= 1
            if _jit["depth"] == 0:
                _jit["seconds"] += time.perf_counter() - _jit["started"]
                _jit["count"] += 1

    event.register("numba:compile", CompileListener())


def report_jit_compiles():
    """Log, the first time it is called after kernels compiled, how many compiled and how long it took."""
    if _jit["reported"] or not _jit["count"] or _jit["depth"]:
        return None
    _jit["reported"] = True
    log.info(
        "Compiled %d Numba kernels in %.1f s (cached: later runs start at once)", _jit["count"], _jit["seconds"])
    return _jit["count"], _jit["seconds"]
