"""Parse a Caffe-style training log into train and test rows (Caffe's tools/extra/parse_log.py).

    train, test = parse_log("caffe_train.log")
    train[0]   # OrderedDict(NumIters=0.0, Seconds=0.0, LearningRate=0.01, loss=2.39126)
    test[0]    # OrderedDict(NumIters=0.0, Seconds=..., LearningRate=0.01, accuracy=0.16, loss=2.31498)
    save_csv_files("caffe_train.log", "out/", train, test)   # out/caffe_train.log.train, .test

A row is made per iteration from the "Train net output #k: name = value" and
"Test net output #k: name = value" lines, with the iteration of the last
"Iteration N" line, the seconds since the "Solving" line and the last logged
"lr = ...".  Timestamps are read in glog's two layouts (`I0210 13:39:22.381`
and, from glog 0.6, `I20261121 21:22:14.850`) and as ISO dates; a log
without timestamps gets Seconds = nan.
"""
import collections
import csv
import datetime
import io
import math
import os
import re

from ..io_utils import atomic_write

REGEX_ITERATION = re.compile(r"Iteration (\d+)")
_NUMBER = r"([-+]?(?:nan|inf)|[\.\deE+-]+)"
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = " + _NUMBER)
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = " + _NUMBER)
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
_TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")   # ANSI CSI sequences (cursor moves, erase line)


def terminal_text(line):
    """What a terminal shows of a line: the text after its last carriage return, escapes removed.

    A transcript of a run that showed a progress bar (`script`, a terminal's scrollback) holds the
    bar's redraws before a log line on the same line, each ended by a carriage return.
    """
    line = line.rstrip("\r\n")
    return _TERMINAL_ESCAPE.sub("", line.rsplit("\r", 1)[-1])

_GLOG_TIME = re.compile(r"^\s*[IWEFD](\d{8}|\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?")
_ISO_TIME = re.compile(r"^\s*\[?(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?")


def extract_datetime_from_line(line, year):
    """The timestamp at the start of a log line, or None.

    glog's `IMMDD hh:mm:ss.uuuuuu` carries no year: `year` is used (and the caller
    moves to the next year when the month wraps).
    """
    match = _GLOG_TIME.match(line)
    if match:
        date, hour, minute, second, fraction = match.groups()
        if len(date) == 8:
            year, month, day = int(date[:4]), int(date[4:6]), int(date[6:])
        else:
            month, day = int(date[:2]), int(date[2:])
        micro = int((fraction or "0").ljust(6, "0"))
        try:
            return datetime.datetime(year, month, day, int(hour), int(minute), int(second), micro)
        except ValueError:
            return None
    match = _ISO_TIME.match(line)
    if match:
        y, mo, d, h, mi, s, fraction = match.groups()
        micro = int((fraction or "0").ljust(6, "0")[:6])
        try:
            return datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
        except ValueError:
            return None
    return None


def _short_glog_stamp(line):
    match = _GLOG_TIME.match(line)
    return bool(match) and len(match.group(1)) == 4


def get_log_created_year(path):
    """The year the log file was written (glog's short timestamps lack it)."""
    return datetime.datetime.fromtimestamp(os.path.getmtime(path)).year


def get_start_time(lines, year):
    """The time of the "Solving" line, else of the first timestamped line, else None."""
    first = None
    for line in lines:
        stamp = extract_datetime_from_line(line, year)
        if stamp is None:
            continue
        if first is None:
            first = stamp
        if "Solving" in line:
            return stamp
    return first


def parse_log(path_to_log):
    """(train_dict_list, test_dict_list): lists of OrderedDict rows, as Caffe's parse_log.py.

    Each row holds NumIters, Seconds, LearningRate and one column per net output.
    """
    with open(path_to_log, "r", errors="replace") as handle:
        lines = handle.readlines()
    return parse_log_lines(lines, get_log_created_year(path_to_log))


def parse_log_lines(lines, year=None):
    """parse_log over a list of lines (a terminal's transcript too: see terminal_text)."""
    lines = [terminal_text(line) for line in lines]
    year = year or datetime.datetime.now().year
    start_time = get_start_time(lines, year)
    timestamped = start_time is not None
    iteration = -1
    learning_rate = float("nan")
    train_dict_list, test_dict_list = [], []
    train_row = test_row = None
    last_time = start_time
    for line in lines:
        iteration_match = REGEX_ITERATION.search(line)
        if iteration_match:
            iteration = float(iteration_match.group(1))
        if iteration == -1:
            continue  # only look for other things once the first iteration is seen
        if timestamped:
            time = extract_datetime_from_line(line, year)
            if time is None:
                continue  # lines without a timestamp (e.g. wrapped lines) are skipped, as in Caffe
            if time.month < last_time.month and _short_glog_stamp(line):
                year += 1  # the short glog timestamp (no year) wrapped into a new year
                time = extract_datetime_from_line(line, year)
            last_time = time
            seconds = (time - start_time).total_seconds()
        else:
            seconds = float("nan")
        learning_rate_match = REGEX_LEARNING_RATE.search(line)
        if learning_rate_match:
            learning_rate = float(learning_rate_match.group(1))
        train_dict_list, train_row = parse_line_for_net_output(
            REGEX_TRAIN_OUTPUT, train_row, train_dict_list, line, iteration, seconds, learning_rate)
        test_dict_list, test_row = parse_line_for_net_output(
            REGEX_TEST_OUTPUT, test_row, test_dict_list, line, iteration, seconds, learning_rate)
    # A last row that never filled up is still a row (Caffe's script drops it; we keep it).
    for rows, row in ((train_dict_list, train_row), (test_dict_list, test_row)):
        if row is not None:
            rows.append(row)
    fix_initial_nan_learning_rate(train_dict_list)
    fix_initial_nan_learning_rate(test_dict_list)
    return train_dict_list, test_dict_list


def parse_line_for_net_output(regex_obj, row, row_dict_list, line, iteration, seconds, learning_rate):
    """Add one "... net output #k: name = value" line to the current row.

    Returns (row_dict_list, row): a row is pushed when a new iteration starts or
    when it has as many columns as the first row.
    """
    output_match = regex_obj.search(line)
    if output_match:
        if not row or row["NumIters"] != iteration:
            if row:
                row_dict_list.append(row)
            row = collections.OrderedDict([("NumIters", iteration), ("Seconds", seconds),
                                           ("LearningRate", learning_rate)])
        row[output_match.group(2)] = float(output_match.group(3))
    if row and len(row_dict_list) >= 1 and len(row) == len(row_dict_list[0]):
        row_dict_list.append(row)
        row = None
    return row_dict_list, row


def fix_initial_nan_learning_rate(dict_list):
    """The first rows come before the first "lr =" line: take the second row's rate."""
    if len(dict_list) > 1 and math.isnan(dict_list[0]["LearningRate"]):
        dict_list[0]["LearningRate"] = dict_list[1]["LearningRate"]


def csv_text(dict_list, delimiter=","):
    """The rows as CSV text with a header line."""
    out = io.StringIO()
    fieldnames = list(dict_list[0].keys())
    for row in dict_list[1:]:
        fieldnames += [k for k in row if k not in fieldnames]
    writer = csv.DictWriter(out, fieldnames=fieldnames, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(dict_list)
    return out.getvalue()


def write_csv(output_filename, dict_list, delimiter=",", verbose=False):
    """Write rows as CSV (nothing when there are no rows)."""
    if not dict_list:
        if verbose:
            print(f"Not writing {output_filename}; no lines to write")
        return False
    with atomic_write(output_filename, "w") as handle:
        handle.write(csv_text(dict_list, delimiter))
    if verbose:
        print(f"Wrote {output_filename}")
    return True


def save_csv_files(logfile_path, output_dir, train_dict_list, test_dict_list, delimiter=",", verbose=False):
    """Write <output_dir>/<log name>.train and .test, as Caffe's script does; returns their paths."""
    log_basename = os.path.basename(logfile_path)
    written = []
    for suffix, rows in (("train", train_dict_list), ("test", test_dict_list)):
        path = os.path.join(output_dir, f"{log_basename}.{suffix}")
        if write_csv(path, rows, delimiter, verbose):
            written.append(path)
    return written


def read_csv(path):
    """Rows written by write_csv, as dicts of floats."""
    with open(path, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(handle)]
