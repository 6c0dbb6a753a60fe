"""The prefetch thread: overlap with the net, clean stops, errors that name the record."""
import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

from data_helpers import build_layer, make_lmdb, prefetch_threads, wait_no_prefetch_threads
from pycaffe_lite.data.datum import DataError
from pycaffe_lite.data.lmdb_io import LMDBWriter
from pycaffe_lite.data.prefetch import Prefetcher
from pycaffe_lite.proto import caffe_pb2


@pytest.fixture(autouse=True)
def no_threads_left():
    yield
    assert not wait_no_prefetch_threads(), "a prefetch thread outlived its test"


def _data_layer(db, batch=4, prefetch=4, extra=""):
    return build_layer(f'name: "data" type: "Data" top: "data" top: "label" transform_param {{ {extra} }} '
                       f'data_param {{ source: "{db}" batch_size: {batch} backend: LMDB prefetch: {prefetch} }}',
                       caffe_pb2.TRAIN)


def test_iteration_time_is_the_max_of_net_and_data_not_the_sum():
    def produce():
        time.sleep(0.04)             # the reader: 40 ms a batch
        return np.zeros(3), None

    with Prefetcher(produce, depth=2, name="timing") as prefetcher:
        prefetcher.get()            # warm up: the first batch cannot overlap anything
        started = time.perf_counter()
        for _ in range(10):
            prefetcher.get()
            time.sleep(0.04)         # the net: 40 ms an iteration
        per_iteration = (time.perf_counter() - started) / 10
    assert per_iteration < 0.8 * (0.04 + 0.04), per_iteration     # sum would be 80 ms, max is 40 ms
    assert not prefetcher.alive


def test_data_layer_overlaps_a_slow_net(tmp_path, monkeypatch):
    db = make_lmdb(tmp_path, n=8, size=(8, 8))
    from pycaffe_lite.data.batches import BatchLoader
    real = BatchLoader.next_batch

    def slow(self):
        time.sleep(0.03)
        return real(self)

    monkeypatch.setattr(BatchLoader, "next_batch", slow)
    layer, tops = _data_layer(db, prefetch=3)
    try:
        layer.Forward([], tops)
        started = time.perf_counter()
        for _ in range(8):
            layer.Forward([], tops)
            time.sleep(0.03)         # a net as slow as the reader
        per_iteration = (time.perf_counter() - started) / 8
        assert per_iteration < 0.8 * 0.06, per_iteration
        assert layer.prefetcher.wait_seconds < 0.5 * layer.prefetcher.batches * 0.03 + 0.06
    finally:
        layer.close()
    assert not layer.prefetcher.alive


def test_queue_is_bounded_by_prefetch(tmp_path):
    db = make_lmdb(tmp_path, n=8, size=(8, 8))
    layer, tops = _data_layer(db, prefetch=2)
    try:
        time.sleep(0.2)
        assert layer.prefetcher._queue.qsize() <= 2
        assert layer._loader.count <= 3 * 4           # 2 queued + 1 being put
    finally:
        layer.close()


def test_close_is_idempotent_and_dropping_the_layer_stops_the_thread(tmp_path):
    db = make_lmdb(tmp_path, n=8, size=(8, 8))
    layer, tops = _data_layer(db)
    layer.Forward([], tops)
    layer.close()
    layer.close()
    assert not layer.prefetcher.alive
    layer, tops = _data_layer(db)
    assert prefetch_threads()
    del layer, tops
    gc.collect()
    assert not wait_no_prefetch_threads()


def test_ctrl_c_while_waiting_for_data():
    release = threading.Event()

    def stuck():
        release.wait(5)              # a reader that never delivers
        return None

    prefetcher = Prefetcher(stuck, depth=1, name="stuck").start()
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            prefetcher.get()
    finally:
        timer.cancel()
        release.set()
        prefetcher.close()
    assert not prefetcher.alive


def test_reader_errors_reach_the_consumer_and_stop_the_thread():
    calls = []

    def produce():
        calls.append(1)
        if len(calls) == 3:
            raise DataError("record 'k3' of 'db' is broken", "db", b"k3")
        return (len(calls),)

    prefetcher = Prefetcher(produce, depth=4, name="failing").start()
    assert prefetcher.get() == (1,) and prefetcher.get() == (2,)
    with pytest.raises(DataError, match="k3"):
        prefetcher.get()
    assert not prefetcher.alive
    with pytest.raises(DataError):       # and keeps saying so
        prefetcher.get()


# ---- errors that name the database and the key -------------------------------
def _lmdb_with(tmp_path, values):
    db = tmp_path / "db"
    with LMDBWriter(db) as w:
        for key, value in values:
            w.put(key, value)
    return db


def _good(i):
    return caffe_pb2.Datum(channels=1, height=4, width=4, data=bytes([i] * 16), label=i).SerializeToString()


@pytest.mark.parametrize("bad,message", [
    (b"\x22\x10abc", "not a valid Datum"),                                          # truncated protobuf
    (caffe_pb2.Datum(channels=1, height=4, width=4, data=b"xx").SerializeToString(), "has 2 data bytes"),
    (caffe_pb2.Datum(encoded=True, data=b"not a jpeg").SerializeToString(), "could not decode"),
])
def test_corrupt_record_names_database_and_key(tmp_path, bad, message):
    records = [(f"{i:08d}", _good(i)) for i in range(6)]
    records[5] = ("00000005_broken", bad)
    db = _lmdb_with(tmp_path, records)
    layer, tops = _data_layer(db, batch=2)
    try:
        layer.Forward([], tops)
        layer.Forward([], tops)
        with pytest.raises(DataError) as info:
            layer.Forward([], tops)
        assert message in str(info.value)
        assert "00000005_broken" in str(info.value) and str(db) in str(info.value)
        assert info.value.key == b"00000005_broken" and info.value.source == str(db)
    finally:
        layer.close()
    assert not layer.prefetcher.alive


def test_missing_lmdb_names_it_and_starts_nothing(tmp_path):
    with pytest.raises(DataError, match=f"LMDB '{tmp_path}/nope' does not exist"):
        _data_layer(tmp_path / "nope")
    assert not prefetch_threads()


@pytest.mark.parametrize("kind", ["file", "folder", "leveldb"])
def test_wrong_source_path_names_it(tmp_path, kind):
    target = tmp_path / "src"
    if kind == "file":
        target.write_text("img/000.png 0\n")
        message = "is a file, not an LMDB"
    else:
        target.mkdir()
        message = "is not an LMDB"
        if kind == "leveldb":
            (target / "CURRENT").write_text("MANIFEST-000001\n")
            message = "looks like a LevelDB"
    with pytest.raises(DataError, match=message) as info:
        _data_layer(target)
    assert str(target) in str(info.value)
    assert not prefetch_threads()


def test_empty_lmdb_is_an_error(tmp_path):
    db = _lmdb_with(tmp_path, [])
    with pytest.raises(DataError, match="has no records"):
        _data_layer(db)


def test_image_list_with_a_missing_file_names_list_and_path(tmp_path):
    from data_helpers import write_images
    list_file, _ = write_images(tmp_path, n=4, size=(8, 8))
    list_file.write_text(list_file.read_text() + "img/gone.png 1\n")
    layer, tops = build_layer(f'name: "images" type: "ImageData" top: "data" top: "label" '
                              f'image_data_param {{ source: "{list_file}" root_folder: "{tmp_path}/" batch_size: 5 }}')
    try:
        with pytest.raises(DataError) as info:
            layer.Forward([], tops)
        assert "img/gone.png" in str(info.value) and str(list_file) in str(info.value)
    finally:
        layer.close()


def test_data_tops_take_the_prefetched_batches_without_a_copy(tmp_path):
    """Each forward hands the loader's fresh batch to the tops (Caffe swaps the pointer): the top's
    array is the batch the prefetcher gave, a view of an earlier batch keeps its values, and the
    values follow the database across its end, with three batches prefetched ahead."""
    import cv2
    db = make_lmdb(tmp_path, n=5, size=(6, 7))
    images = [cv2.imread(str(tmp_path / f"img/{i:03d}.png")).transpose(2, 0, 1) for i in range(5)]
    layer, tops = _data_layer(db, batch=2, prefetch=3)
    handed = []
    real_get = layer.prefetcher.get

    def get():
        handed.append(real_get())
        return handed[-1]

    layer.prefetcher.get = get
    try:
        views = []
        for step in range(4):                        # items 0 1 | 2 3 | 4 0 | 1 2
            layer.Forward([], tops)
            data, label = handed[-1]
            assert tops[0].data is data and tops[1].data is label
            want = [(2 * step + k) % 5 for k in range(2)]
            np.testing.assert_array_equal(tops[0].data, np.stack([images[i] for i in want]))
            np.testing.assert_array_equal(tops[1].data, [i % 5 for i in want])   # labels: i % 5
            views.append((tops[0].data[:1], want[0]))
        for view, item in views:
            np.testing.assert_array_equal(view[0], images[item])
    finally:
        layer.close()
