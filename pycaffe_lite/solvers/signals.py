"""Signals during training, as Caffe's SignalHandler: SIGINT and SIGHUP become
solver actions (stop, snapshot or none) that the solver polls between
iterations and between test batches, so a snapshot is never cut in half.

    with SignalHandler(sigint_effect="stop", sighup_effect="snapshot") as handler:
        solver.set_action_function(handler.check_for_signals)
        solver.solve()

A second SIGINT while a requested stop is still pending raises
KeyboardInterrupt at once (files are written atomically, so nothing is left
half-written).
"""
import logging
import signal
import threading

log = logging.getLogger("pycaffe_lite.solver")


class SolverAction:
    NONE = "none"
    STOP = "stop"
    SNAPSHOT = "snapshot"
    ALL = (NONE, STOP, SNAPSHOT)


def parse_effect(value, flag):
    if value not in SolverAction.ALL:
        raise ValueError(f'Invalid signal effect "{value}" was specified for {flag} '
                         f"(use one of: {', '.join(SolverAction.ALL)})")
    return value


class SignalHandler:
    def __init__(self, sigint_effect=SolverAction.STOP, sighup_effect=SolverAction.SNAPSHOT):
        self.sigint_effect = parse_effect(sigint_effect, "--sigint_effect")
        self.sighup_effect = parse_effect(sighup_effect, "--sighup_effect")
        self.got_sigint = False
        self.got_sighup = False
        self.stop_pending = False
        self._previous = {}

    def _on_sigint(self, signum, frame):
        if self.sigint_effect == SolverAction.STOP and (self.got_sigint or self.stop_pending):
            raise KeyboardInterrupt
        self.got_sigint = True

    def _on_sighup(self, signum, frame):
        self.got_sighup = True

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            log.warning("signal handlers can only be installed from the main thread; "
                        "SIGINT/SIGHUP keep their default behaviour")
            return self
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        if hasattr(signal, "SIGHUP"):
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_sighup)
        return self

    def uninstall(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    __enter__ = install

    def __exit__(self, *exc):
        self.uninstall()

    def check_for_signals(self):
        """The pending action (each signal is reported once), SIGHUP first as in Caffe."""
        if self.got_sighup:
            self.got_sighup = False
            return self.sighup_effect
        if self.got_sigint:
            self.got_sigint = False
            self.stop_pending = self.stop_pending or self.sigint_effect == SolverAction.STOP
            return self.sigint_effect
        return SolverAction.NONE
