"""Where the Numba kernels' compiled cache goes (`njit(cache=True)`).

Numba tries, in order: $NUMBA_CACHE_DIR, the kernel's own `__pycache__` folder, then the user's
cache folder (`$XDG_CACHE_HOME/numba` or `~/.cache/numba`), and without any writable one every
cached kernel fails to compile ("cannot cache function ...: no locator available").  An installed
package is often read-only, and a service account may have no writable home: then the cache goes
to a folder of this user's under the temporary directory (`$TMPDIR/pycaffe_lite-numba-<uid>`,
mode 0700), and if even that cannot be made, the kernels are not used (their NumPy versions are).
"""
import contextlib
import logging
import os
import stat
import tempfile

log = logging.getLogger("pycaffe_lite")


def _writable(path):
    """Numba's own test of a cache folder: it can be made and a file created in it."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _user_wide_dir():
    from numba.misc.appdirs import AppDirs
    return AppDirs(appname="numba", appauthor=False).user_cache_dir


def _private_dir():
    """$TMPDIR/pycaffe_lite-numba-<uid>: made 0700, and used only if it is a folder of ours (not a link)."""
    path = os.path.join(tempfile.gettempdir(), f"pycaffe_lite-numba-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private folder of this user")
    return path


KERNEL_FOLDER = os.path.dirname(os.path.abspath(__file__))


def fallback_cache_dir():
    """None when Numba finds a writable cache by itself, else the folder to give it."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    if _writable(os.path.join(KERNEL_FOLDER, "__pycache__")) or _writable(_user_wide_dir()):
        return None
    return _private_dir()


def ensure_cache_locator():
    """Give Numba a cache folder it can write when it has none; False if there is none at all."""
    try:
        folder = fallback_cache_dir()
    except OSError as exc:
        log.warning("Numba has no writable cache folder (%s); using the NumPy versions of the kernels", exc)
        return False
    if folder is not None:
        import numba
        numba.config.CACHE_DIR = folder
        log.info("Numba kernels cache in %s (the package's folder and ~/.cache are not writable)", folder)
    return True
