"""Batch loaders: read records, decode, transform, and stack them into a batch.

A loader is what the prefetch thread runs: `loader.next_batch()` returns
(data, label) with data of shape (batch_size, C, H, W) in the net's dtype
and label (batch_size,) or None.  The shape of each batch follows its first
record (Caffe's load_batch), so a database of one image size gives one shape.

Record sources yield (key, payload):
  `LMDBRecords`  keys and serialized Datums of an LMDB, wrapping at the end
  `ImageList`    "path label" lines of a list file (ImageData), reshuffled per epoch

Randomness is per item: item n of the stream draws from
`item_rng(seed, n)` (a PCG64 state hashed from both), so a seed fixes every
batch whatever the number of worker threads.
"""
import concurrent.futures
import hashlib
import logging
import os
import re
import struct
import threading

import numpy as np

from ..proto import caffe_pb2
from .datum import DataError, _key_text, datum_to_array, parse_datum, read_image
from .lmdb_io import LMDBReader
from ..io_utils import FormatError, read_file

log = logging.getLogger(__name__)


class Batch(tuple):
    """(data, label) of one batch, with `keys`: the key (or list line) of each of its records."""

    def __new__(cls, arrays, keys=None):
        batch = super().__new__(cls, arrays)
        batch.keys = keys
        return batch


_LOCAL = threading.local()
_INC = 0x5851F42D4C957F2D2545F4914F6CDD1D | 1     # one fixed PCG64 stream (the increment must be odd)


def item_rng(seed, index):
    """The random generator of item `index` of a stream seeded with `seed`.

    Equivalent in quality to np.random.default_rng([seed, index]) but about
    five times cheaper: a per-thread PCG64 is moved to a state hashed from
    (seed, index) instead of building a Generator per item.  The returned
    generator is reused by the thread's next call.
    """
    gen = getattr(_LOCAL, "gen", None)
    if gen is None:
        gen = _LOCAL.gen = np.random.Generator(np.random.PCG64(0))
    digest = hashlib.blake2b(struct.pack("<QQ", seed & _MASK64, index & _MASK64), digest_size=16).digest()
    gen.bit_generator.state = {"bit_generator": "PCG64",
                               "state": {"state": int.from_bytes(digest, "little"), "inc": _INC},
                               "has_uint32": 0, "uinteger": 0}
    return gen


_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------
# Record sources
# --------------------------------------------------------------------------
class LMDBRecords:
    """(key, value) records of an LMDB, decoded to (image, layout, label) by a transformer."""

    def __init__(self, path, transformer, rank=0, num_ranks=1):
        self.source = os.fspath(path)
        self.transformer = transformer
        self.reader = LMDBReader(self.source, rank=rank, num_ranks=num_ranks)

    def peek(self):
        return self.reader.peek()

    def next(self):
        return self.reader.next()

    def next_many(self, count):
        return self.reader.next_many(count)

    def decode(self, key, value):
        datum = parse_datum(value, self.source, key)
        image, layout = self.transformer.decode(datum, self.source, key)
        return image, layout, datum.label

    def raw_stack(self, records):
        """(N, C, H, W) uint8/float32 stack of raw same-shape Datums, or None when not possible."""
        first = parse_datum(records[0][1], self.source, records[0][0])
        if first.encoded:
            return None
        shape = (first.channels, first.height, first.width)
        if not first.data:
            arrays, labels = [], []
            for i, (key, value) in enumerate(records):
                datum = first if i == 0 else parse_datum(value, self.source, key)
                if datum.encoded:
                    return None
                arrays.append(datum_to_array(datum, self.source, key))
                labels.append(datum.label)
            if len({a.shape for a in arrays}) != 1 or len({a.dtype for a in arrays}) != 1:
                return None
            return np.stack(arrays), labels
        # uint8 Datums: join the payloads and view them as one (N, C, H, W) array.
        datum_to_array(first, self.source, records[0][0])      # checks the first record's size
        size = len(first.data)
        payloads, labels = [first.data], [first.label]
        datum = caffe_pb2.Datum()
        for _key, value in records[1:]:
            try:
                datum.ParseFromString(value)
            except Exception:
                return None          # the per-item path names the broken record
            if (datum.encoded or len(datum.data) != size
                    or (datum.channels, datum.height, datum.width) != shape):
                return None
            payloads.append(datum.data)
            labels.append(datum.label)
        stack = np.frombuffer(b"".join(payloads), np.uint8).reshape((len(records),) + shape)
        return stack, labels

    def close(self):
        self.reader.close()


def caffe_atoi(text):
    """C's atoi() as glibc does it: leading whitespace, an optional sign, the digits that follow
    (0 when there are none), saturated to a C long and truncated to a 32-bit int."""
    match = _ATOI.match(text)
    if not match:
        return 0
    value = min(max(int(match.group(1)), -(1 << 63)), (1 << 63) - 1)
    return (value + (1 << 31)) % (1 << 32) - (1 << 31)


_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def list_file_lines(path):
    """The lines of a Caffe list file as std::getline reads them, a trailing '\r' dropped."""
    path = os.fspath(path)
    try:
        text = read_file(path, binary=False, what="list file")
    except FormatError as exc:
        raise DataError(f"cannot read list file '{path}': {exc}", path) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()                 # a final newline ends the last line; it does not start another
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def split_list_line(line):
    """(name, label) of a list-file line as Caffe splits it: at the last space, the label atoi() of
    the rest; a line without a space is all name, with label atoi(line) (usually 0)."""
    pos = line.rfind(" ")
    return (line[:pos] if pos >= 0 else line), caffe_atoi(line[pos + 1:])


def read_list_file(path):
    """(line number, path, label) of each line of an ImageData list file, parsed as Caffe does
    (split_list_line).  Blank lines are skipped with a warning (Caffe would fail to load an image
    named '')."""
    items, blank = [], []
    for number, line in enumerate(list_file_lines(path), 1):
        if line.strip():
            items.append((number,) + split_list_line(line))
        else:
            blank.append(number)
    if blank:
        log.warning("list file '%s': skipped %d blank line(s) (line %s)", os.fspath(path), len(blank),
                    ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else ""))
    return items


def read_listed_image(source, number, root_folder, name, new_height=0, new_width=0, is_color=True):
    """The HWC image that line `number` of list file `source` names; a DataError naming both when
    it cannot be read.  Caffe concatenates root_folder and the name as they are."""
    path = root_folder + name
    image = read_image(path, new_height, new_width, is_color)
    if image is None:
        raise DataError(f"Could not load '{path}' (list file '{source}', line {number})", source, name)
    return image


class ImageList:
    """Records of an ImageData list file: images read from disk with OpenCV.

    With `num_ranks` > 1 the list keeps the records whose running offset is `rank` modulo
    `num_ranks` (the ranks' TEST readers, which split the test iterations)."""

    def __init__(self, path, transformer, root_folder="", new_height=0, new_width=0, is_color=True,
                 shuffle=False, seed=0, rand_skip=0, rank=0, num_ranks=1):
        self.source = os.fspath(path)
        self.transformer = transformer
        self.root_folder = root_folder
        self.new_height, self.new_width = int(new_height), int(new_width)
        if (self.new_height > 0) != (self.new_width > 0):
            raise ValueError("image_data_param: new_height and new_width must be set together")
        self.is_color = is_color
        self.shuffle = shuffle
        self.seed = seed
        self.items = read_list_file(self.source)
        if not self.items:
            raise DataError(f"list file '{self.source}' is empty", self.source)
        self.epoch = 0
        self.order = self._order()
        self.pos = 0
        if rand_skip:
            self.pos = int(np.random.default_rng([seed, 0x5C1B]).integers(rand_skip)) % len(self.items)
        self.rank, self.num_ranks = int(rank), max(1, int(num_ranks))
        self.offset = 0           # records passed since the start (as Caffe's DataLayer counts)
        self._skip()

    def _order(self):
        if not self.shuffle:
            return np.arange(len(self.items))
        return np.random.default_rng([self.seed, 0x5EED, self.epoch]).permutation(len(self.items))

    def peek(self):
        number, name, label = self.items[self.order[self.pos]]
        return name, (name, label, number)

    def next(self):
        record = self.peek()
        self._advance()
        self._skip()
        return record

    def _advance(self):
        self.offset += 1
        self.pos += 1
        if self.pos >= len(self.items):
            log.debug("Restarting data prefetching from start.")
            self.pos = 0
            self.epoch += 1
            self.order = self._order()

    def _skip(self):
        while self.offset % self.num_ranks != self.rank:
            self._advance()

    def decode(self, key, payload):
        name, label, number = payload
        return (read_listed_image(self.source, number, self.root_folder, name, self.new_height, self.new_width,
                                  self.is_color), "hwc", label)

    def raw_stack(self, records):
        return None

    def close(self):
        pass


# --------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------
class BatchLoader:
    """Builds batches from a record source with a transformer (runs on the prefetch thread)."""

    def __init__(self, records, transformer, batch_size, dtype=np.float32, output_labels=True, seed=0,
                 num_threads=1, alloc=None, name="data"):
        if batch_size <= 0:
            raise ValueError(f"{name}: batch_size must be positive, got {batch_size}")
        self.records = records
        self.transformer = transformer
        self.batch_size = int(batch_size)
        self.dtype = np.dtype(dtype)
        self.output_labels = output_labels
        self.seed = int(seed)
        self.alloc = alloc or np.empty
        self.name = name
        self.count = 0          # items produced so far (the per-item seed)
        threads = int(num_threads)
        if threads == 0:
            threads = min(4, os.cpu_count() or 1)
        self.threads = max(1, threads)
        self._pool = None
        key, payload = records.peek()
        image, layout, _ = self._decode(key, payload)
        self.item_shape = tuple(transformer.infer_shape(image, layout))

    @property
    def source(self):
        return self.records.source

    def _wrap(self, exc, key):
        if isinstance(exc, DataError):
            return exc
        return DataError(f"{self.name}: record '{_key_text(key)}' of '{self.source}': {exc}", self.source, key)

    def _decode(self, key, payload):
        try:
            return self.records.decode(key, payload)
        except Exception as exc:
            raise self._wrap(exc, key) from exc

    def _item_rng(self, index):
        if not self.transformer.needs_rng:
            return None
        return item_rng(self.seed, index)

    def _fill(self, out, i, key, payload, index, decoded=None):
        try:
            image, layout, label = decoded if decoded is not None else self.records.decode(key, payload)
            if out is not None:
                self.transformer.transform(image, layout, out[i], self._item_rng(index))
            return label
        except Exception as exc:
            raise self._wrap(exc, key) from exc

    def next_batch(self):
        """A Batch (data, label) whose `keys` are its records' keys, for errors about its values."""
        many = getattr(self.records, "next_many", None)
        records = many(self.batch_size) if many else [self.records.next() for _ in range(self.batch_size)]
        return Batch(self._batch(records), [_key_text(key) for key, _ in records])

    def _batch(self, records):
        first = self.count
        self.count += self.batch_size
        label = self.alloc((self.batch_size,), self.dtype) if self.output_labels else None

        # Fast path: raw same-size Datums, deterministic transform -> one vectorized pass.
        if self.transformer.is_plain and not self.transformer.needs_rng:
            stacked = None
            try:
                stacked = self.records.raw_stack(records)
            except Exception:
                stacked = None      # fall back to per item: it names the failing record
            if stacked is not None:
                stack, labels = stacked
                data = self.alloc((self.batch_size,) + tuple(self.transformer.infer_shape(stack[0], "chw")),
                                  self.dtype)
                try:
                    self.transformer.transform_stack(stack, data)
                except Exception as exc:
                    raise self._wrap(exc, records[0][0]) from exc
                if label is not None:
                    label[...] = labels
                return data, label

        # Per item: the first record fixes the batch shape.
        key0, payload0 = records[0]
        decoded0 = self._decode(key0, payload0)
        shape = tuple(self.transformer.infer_shape(decoded0[0], decoded0[1]))
        data = self.alloc((self.batch_size,) + shape, self.dtype)
        jobs = [(i, key, payload, first + i, decoded0 if i == 0 else None)
                for i, (key, payload) in enumerate(records)]
        if self.threads > 1:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.threads,
                                                                   thread_name_prefix=f"decode:{self.name}")
            labels = list(self._pool.map(lambda job: self._fill(data, *job), jobs))
        else:
            labels = [self._fill(data, *job) for job in jobs]
        if label is not None:
            label[...] = labels
        return data, label

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.records.close()
