"""Signals during training, as Caffe's SignalHandler: SIGINT, SIGTERM and SIGHUP become
solver actions (stop, snapshot or none) that the solver polls between
iterations and between test batches, so a snapshot is never cut in half.

    with SignalHandler(sigint_effect="stop", sighup_effect="snapshot", sigterm_effect="stop") as handler:
        solver.set_action_function(handler.check_for_signals)
        solver.solve()

SIGTERM (what a cluster scheduler or `docker stop` sends) is not one of Caffe's: it is
handled as SIGINT is by default, so a stopped job leaves a snapshot to resume from.
A second stopping signal while a requested stop is still pending raises
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


# Caffe polls SIGHUP before SIGINT; SIGTERM comes last
_SIGNALS = ("SIGHUP", "SIGINT", "SIGTERM")


class SignalHandler:
    def __init__(self, sigint_effect=SolverAction.STOP, sighup_effect=SolverAction.SNAPSHOT,
                 sigterm_effect=SolverAction.STOP):
        self.effects = {"SIGINT": parse_effect(sigint_effect, "--sigint_effect"),
                        "SIGHUP": parse_effect(sighup_effect, "--sighup_effect"),
                        "SIGTERM": parse_effect(sigterm_effect, "--sigterm_effect")}
        self.received = set()
        self.stop_pending = False
        self._previous = {}

    # Caffe's names for the flags the solver reads
    sigint_effect = property(lambda self: self.effects["SIGINT"])
    sighup_effect = property(lambda self: self.effects["SIGHUP"])
    sigterm_effect = property(lambda self: self.effects["SIGTERM"])
    got_sigint = property(lambda self: "SIGINT" in self.received)
    got_sighup = property(lambda self: "SIGHUP" in self.received)
    got_sigterm = property(lambda self: "SIGTERM" in self.received)

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if self.effects[name] == SolverAction.STOP and (name in self.received or self.stop_pending):
            raise KeyboardInterrupt
        self.received.add(name)

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            log.warning("signal handlers can only be installed from the main thread; "
                        "SIGINT/SIGTERM/SIGHUP keep their default behaviour")
            return self
        for name in _SIGNALS:
            if hasattr(signal, name):
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._on_signal)
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
        for name in _SIGNALS:
            if name in self.received:
                self.received.discard(name)
                effect = self.effects[name]
                self.stop_pending = self.stop_pending or effect == SolverAction.STOP
                return effect
        return SolverAction.NONE

