"""Progress bars (tqdm) for the long commands, on a terminal only.

A command wraps its work in `progress_bar(args, "convert_imageset", unit="img")` and passes the
callback it yields, `update(done, total)`, to the library function (which knows nothing of
bars).  There is no bar when stderr is not a terminal or with `--quiet`, so logs written to a
file or a pipe never hold one.  While a bar is up, every log line of a handler on stderr goes out
through tqdm.write, which takes the bar down, writes the line whole and redraws the bar under it:
a log line never has a bar inside it (and parse_log also reads a terminal's transcript, whose
lines may start with an overwritten bar).
"""
import contextlib
import logging
import sys


def wants_bar(args, stream=None):
    """A bar goes on `stream` (stderr) when it is a terminal and --quiet was not given."""
    if getattr(args, "quiet", False):
        return False
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _console_loggers():
    return [logging.getLogger(), logging.getLogger("pycaffe_lite")]


@contextlib.contextmanager
def progress_bar(args, desc, unit="it", unit_scale=False, leave=True, initial=0, stream=None, enabled=True):
    """Yield update(done, total=None, **postfix): the bar drawn on first call; a no-op without a bar."""
    if not enabled or not wants_bar(args, stream):
        yield _no_bar
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm
    state = {}

    def update(done, total=None, **postfix):
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale,
                                      unit_divisor=1024 if unit == "B" else 1000, leave=leave, initial=initial,
                                      file=stream or sys.stderr, dynamic_ncols=True)
        if total is not None and bar.total != total:
            bar.total = total
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.update(done - bar.n)

    try:
        with logging_redirect_tqdm(loggers=_console_loggers()):
            yield update
    finally:
        if "bar" in state:
            state["bar"].close()


def _no_bar(done, total=None, **postfix):
    """The callback when there is no bar."""


def add_quiet(parser):
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (there is none either when stderr is not a terminal)")
