"""Fetch a zoo model's weights, checked against the sha1 in its readme.

    from pycaffe_lite.zoo import fetch_weights
    path = fetch_weights("bvlc_alexnet")                      # download (caffemodel_url)
    path = fetch_weights("bvlc_alexnet", source="alexnet.caffemodel")   # offline, from a file

The file is streamed into a temporary file beside the destination while its
sha1 is computed, and renamed into place only when the digest matches: a
failed, interrupted or tampered download never leaves a file where the
weights go.  Without a network, say so plainly and say how to go on.
"""
import hashlib
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..io_utils import atomic_write
from .manifest import ZooModel, get_model

CHUNK = 1 << 20


class ChecksumError(ValueError):
    """The fetched file's sha1 is not the one the readme records."""


def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_url(source):
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https", "file", "ftp")


def _local_path(source):
    """The file a local path or file:// URL names; None for a network URL."""
    parsed = urllib.parse.urlparse(str(source))
    if not _is_url(source):
        return Path(source)
    return Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else None


def _readme_url(entry):
    """The readme's caffemodel_url: http(s) only, so a readme from anywhere cannot make us copy a local
    file (file:// and local paths are taken from the command line only)."""
    url = entry.url
    if url and urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise ValueError(f"{entry.folder / 'readme.md'}: caffemodel_url {url!r} is not an http(s) URL; a "
                         "readme's URL is only downloaded, never read from this machine. To use a local "
                         "file, give it yourself: zoo fetch NAME --from FILE")
    return url


def _check_is_caffemodel(path, described):
    """Unverified (--no-verify), a local file is copied only when it is a trained net: a NetParameter
    with at least one layer holding blobs."""
    from ..proto.files import read_weights
    try:
        weights = read_weights(path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{described}: not a .caffemodel, so --no-verify does not copy it ({exc})") from None
    if not any(layer.blobs for layer in list(weights.layer) + list(weights.layers)):
        raise ValueError(f"{described}: a NetParameter without weights (no layer holds blobs), so "
                         "--no-verify does not copy it")


def _open_source(source, timeout, name="NAME"):
    """(readable stream, total size or None, description)."""
    if not _is_url(source):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{source}: no such file")
        return open(path, "rb"), path.stat().st_size, str(path)
    scheme = urllib.parse.urlparse(str(source)).scheme
    if scheme == "ftp":
        raise ValueError(f"{source}: only http, https and file URLs are fetched")
    request = urllib.request.Request(str(source), headers={"User-Agent": "pycaffe-lite"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{source}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlparse(str(source)).hostname or str(source)
        raise RuntimeError(
            f"cannot reach {host} ({reason}). This machine may have no network access. "
            "Download the file elsewhere, copy it here, and run "
            f"`pycaffe-lite zoo fetch {name} --from FILE`: the sha1 is checked the same way.") from None
    length = response.headers.get("Content-Length")
    return response, (int(length) if length and length.isdigit() else None), str(source)


def fetch_weights(model, source=None, dest=None, sha1=None, verify=True, root=None,
                  timeout=60, progress=None):
    """Fetch the weights of zoo `model` (a name, a folder path or a ZooModel); return their path.

    source:  a local file or an http(s)/file URL; default the readme's caffemodel_url.
    dest:    where to write; default models/<name>/<caffemodel>.
    sha1:    the digest to expect instead of the readme's.
    verify:  False skips the check (say so loudly in the caller).
    progress(bytes_done, total_or_None): called as data arrives.
    """
    entry = model if isinstance(model, ZooModel) else get_model(model, root)
    expected = (sha1 or entry.sha1 or "").lower() or None
    if verify and expected is None:
        raise ValueError(
            f"{entry.folder / 'readme.md'} records no sha1 for {entry.name}'s weights, so a download "
            "could not be checked. Pass --sha1 with a digest you trust (or --no-verify to accept "
            "the file unchecked).")
    dest = Path(dest) if dest is not None else entry.weights_path
    if verify and dest.is_file() and sha1_of(dest) == expected:
        return dest
    if source is None:
        source = _readme_url(entry)
        if not source:
            where = entry.weights_from or "see its readme"
            raise ValueError(f"{entry.name} has no caffemodel_url to download from ({where}); "
                             f"give the file with --from FILE")
    local = _local_path(source)
    if not verify and local is not None:
        _check_is_caffemodel(local, str(source))
    dest.parent.mkdir(parents=True, exist_ok=True)
    stream, total, described = _open_source(source, timeout, entry.name)
    digest = hashlib.sha1()
    done = 0
    with stream:
        with atomic_write(dest, "wb") as out:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            if total is not None and done != total:
                raise RuntimeError(f"{described}: received {done} bytes of {total}; the transfer was cut")
            actual = digest.hexdigest()
            if verify and actual != expected:
                raise ChecksumError(f"{described}: sha1 {actual} does not match {expected} "
                                    f"recorded for {entry.name}; nothing was written to {dest}")
    _readable(dest)
    return dest


def _readable(path):
    """Give the file the permissions a plain open() would have (the temporary file was 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


__all__ = ["ChecksumError", "fetch_weights", "sha1_of"]
