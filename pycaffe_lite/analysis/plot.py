"""Plot training logs: loss and accuracy against iterations or seconds, as a PNG
(Caffe's tools/extra/plot_training_log.py.example, on top of parse_log).

    plot_training_log(["caffe_train.log"], "curves.png", x="iters")

draws the train and test losses in one panel and the test accuracies (any
test output whose name holds "acc") in a second, one line per log.  Caffe's
numbered chart types are kept for its command line:

    0: Test accuracy  vs. Iters       4: Train learning rate  vs. Iters
    1: Test accuracy  vs. Seconds     5: Train learning rate  vs. Seconds
    2: Test loss  vs. Iters           6: Train loss  vs. Iters
    3: Test loss  vs. Seconds         7: Train loss  vs. Seconds
"""
import math
import os

from ..io_utils import atomic_write
from .parse_log import parse_log

CHART_TYPES = [
    ("Test", "accuracy", "Iters"), ("Test", "accuracy", "Seconds"),
    ("Test", "loss", "Iters"), ("Test", "loss", "Seconds"),
    ("Train", "learning rate", "Iters"), ("Train", "learning rate", "Seconds"),
    ("Train", "loss", "Iters"), ("Train", "loss", "Seconds"),
]


def chart_type_description(chart_type):
    split, field, x = CHART_TYPES[chart_type]
    return f"{split} {field}  vs. {x}"


def supported_chart_types():
    return [chart_type_description(i) for i in range(len(CHART_TYPES))]


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(f"plotting needs matplotlib (pip install matplotlib): {exc}") from exc
    matplotlib.use("Agg", force=False)  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def _x_values(rows, x):
    key = "NumIters" if x.lower().startswith("iter") else "Seconds"
    values = [row[key] for row in rows]
    if key == "Seconds" and values and all(math.isnan(v) for v in values):
        raise ValueError("the log has no timestamps, so it cannot be plotted against seconds; use iterations")
    return values


def _columns(rows, predicate):
    names = []
    for row in rows:
        for key in row:
            if key not in ("NumIters", "Seconds", "LearningRate") and predicate(key) and key not in names:
                names.append(key)
    return names


def _is_loss(name):
    return "loss" in name.lower()


def _is_accuracy(name):
    lowered = name.lower()
    return "acc" in lowered or "top-" in lowered or "top_" in lowered


def _label(path):
    name = os.path.basename(path)
    return name[:-4] if name.endswith(".log") else name


def _series(rows, column, x):
    xs, ys = [], []
    for xv, row in zip(_x_values(rows, x), rows):
        if column in row:
            xs.append(xv)
            ys.append(row[column])
    return xs, ys


def _save(fig, plt, png_path):
    png_path = os.fspath(png_path)
    with atomic_write(png_path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return png_path


def plot_training_log(log_paths, png_path, x="iters"):
    """Train and test losses (and test accuracies, when logged) vs iterations or seconds, to a PNG."""
    if isinstance(log_paths, (str, os.PathLike)):
        log_paths = [log_paths]
    plt = _pyplot()
    parsed = [(path, *parse_log(path)) for path in log_paths]
    if not any(train or test for _, train, test in parsed):
        raise ValueError("no 'Train net output' or 'Test net output' lines found in "
                         + ", ".join(map(str, log_paths)))
    has_accuracy = any(_columns(test, _is_accuracy) for _, _, test in parsed)
    fig, axes = plt.subplots(2 if has_accuracy else 1, 1, figsize=(8, 7 if has_accuracy else 4.5),
                             sharex=True, squeeze=False)
    loss_ax = axes[0][0]
    xlabel = "Iterations" if x.lower().startswith("iter") else "Seconds"
    for path, train, test in parsed:
        label = _label(path) if len(parsed) > 1 else ""
        for column in _columns(train, _is_loss) or _columns(train, lambda n: True):
            xs, ys = _series(train, column, x)
            loss_ax.plot(xs, ys, linewidth=0.9, label=f"{label} train {column}".strip())
        for column in _columns(test, _is_loss):
            xs, ys = _series(test, column, x)
            loss_ax.plot(xs, ys, marker="o", linewidth=1.2, label=f"{label} test {column}".strip())
        if has_accuracy:
            for column in _columns(test, _is_accuracy):
                xs, ys = _series(test, column, x)
                axes[1][0].plot(xs, ys, marker="o", linewidth=1.2, label=f"{label} test {column}".strip())
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Training log: " + ", ".join(_label(p) for p in log_paths))
    loss_ax.grid(True, alpha=0.3)
    loss_ax.legend(loc="upper right", fontsize="small")
    if has_accuracy:
        acc_ax = axes[1][0]
        acc_ax.set_ylabel("accuracy")
        acc_ax.grid(True, alpha=0.3)
        acc_ax.legend(loc="lower right", fontsize="small")
    axes[-1][0].set_xlabel(xlabel)
    fig.tight_layout()
    return _save(fig, plt, png_path)


def plot_chart(chart_type, png_path, log_paths):
    """Caffe's numbered chart (see the module docstring), one line per log."""
    if not 0 <= chart_type < len(CHART_TYPES):
        raise ValueError(f"{chart_type} is not a valid chart type; the types are:\n  "
                         + "\n  ".join(f"{i}: {d}" for i, d in enumerate(supported_chart_types())))
    split, field, x = CHART_TYPES[chart_type]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for path in log_paths:
        train, test = parse_log(path)
        rows = train if split == "Train" else test
        if field == "learning rate":
            column = "LearningRate"
        else:
            predicate = _is_loss if field == "loss" else _is_accuracy
            found = _columns(rows, predicate)
            if not found:
                raise ValueError(f"{path}: no {split.lower()} {field} output in the log")
            column = found[0]
        xs, ys = _series(rows, column, x)
        ax.plot(xs, ys, marker="." if len(xs) > 50 else "o", linewidth=0.75, label=_label(path))
    ax.legend(loc="lower right" if field == "accuracy" else "upper right")
    ax.set_title(chart_type_description(chart_type))
    ax.set_xlabel(x)
    ax.set_ylabel(f"{split} {field}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, png_path)
