"""TensorBoard event files of a training run, written through tensorboardX.

    solver = caffe.get_solver("solver.prototxt")
    solver.add_tensorboard("runs/lenet", histograms_every=100)    # or: train --tensorboard runs/lenet
    solver.solve()                                               # then: tensorboard --logdir runs

Steps are Caffe's iteration numbers, those of the log's `Iteration N` lines.  Tags:

    solver/loss             every iteration: its loss (the mean over iter_size, before smoothing)
    solver/smoothed_loss    every `display`: Caffe's smoothed loss (`Iteration N (...), loss = x`)
    solver/lr               every iteration: the learning rate of its update
    train/<output>          every `display`: each train net output as the log prints it
                            (`Train net output #k: name = v`)
    test<i>/<output>        every test pass of test net #i: the output's mean over test_iter batches
                            (`Test net output #k: name = v`)
    weight_norm/<layer>_<k>, grad_norm/<layer>_<k>    every `histograms_every` iterations (0: never):
    weights/<layer>_<k>, gradients/<layer>_<k>        L2 norms and histograms of each parameter blob
                                                      and of its gradient (the diff before the update)

An output holding several values (a per-class accuracy) gets one tag per value, `<output>_<j>`.
Only the root rank writes (`solver.is_root`, Caffe's root_solver(): rank 0 of a distributed run);
the writer opens its file at the first event it writes, so a process that never writes makes none.
"""
import math

import numpy as np

from .. import backend


def _summary_writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise RuntimeError(f"TensorBoard event files are written through tensorboardX ({exc}): "
                           "pip install 'pycaffe-lite[tensorboard]'") from None
    return SummaryWriter


def output_tags(prefix, outputs):
    """[(tag, value)] of [(output name, loss weight, values)]: one tag per value."""
    tags = []
    for name, _, values in outputs:
        values = np.ravel(values)
        if values.size == 1:
            tags.append((f"{prefix}/{name}", float(values[0])))
        else:
            tags.extend((f"{prefix}/{name}_{j}", float(v)) for j, v in enumerate(values))
    return tags


def param_blobs(net):
    """[(name, blob)]: each learnable blob once, named <layer>_<index> after the layer that owns it."""
    seen, named = set(), []
    for layer, blobs in net.params.items():
        for k, blob in enumerate(blobs):
            if id(blob) not in seen:
                seen.add(id(blob))
                named.append((f"{layer}_{k}", blob))
    return named


class TensorBoardWriter:
    """The Solver's observer (Solver.add_observer) that writes the run's event files."""

    def __init__(self, logdir, histograms_every=0):
        if histograms_every < 0:
            raise ValueError(f"histograms_every must be 0 (never) or a number of iterations, got {histograms_every}")
        self._writer_class = _summary_writer_class()      # a missing tensorboardX fails now, not mid-run
        self.logdir = str(logdir)
        self.histograms_every = int(histograms_every)
        self.writer = None

    def _write(self, solver):
        """The SummaryWriter, opened on first use; None on a rank that is not the root."""
        if not solver.is_root:
            return None
        if self.writer is None:
            self.writer = self._writer_class(logdir=self.logdir)
        return self.writer

    def _scalar(self, writer, tag, value, step):
        if math.isfinite(value):        # a diverged run's nan would flatten every chart of its tag
            writer.add_scalar(tag, value, step)

    def on_iteration(self, solver, loss):
        writer = self._write(solver)
        if writer is not None:
            self._scalar(writer, "solver/loss", loss, solver.iter)
            if solver.rate is not None:
                self._scalar(writer, "solver/lr", float(solver.rate), solver.iter)

    def on_display(self, solver, smoothed_loss, outputs):
        writer = self._write(solver)
        if writer is not None:
            self._scalar(writer, "solver/smoothed_loss", float(smoothed_loss), solver.iter)
            for tag, value in output_tags("train", outputs):
                self._scalar(writer, tag, value, solver.iter)

    def on_test(self, solver, test_net_id, means):
        writer = self._write(solver)
        if writer is not None:
            for tag, value in output_tags(f"test{test_net_id}", means):
                self._scalar(writer, tag, value, solver.iter)

    def on_gradients(self, solver):
        if not self.histograms_every or solver.iter % self.histograms_every:
            return
        writer = self._write(solver)
        if writer is None:
            return
        for name, blob in param_blobs(solver.net):
            for kind, norm_tag, array in (("weights", "weight_norm", blob.data), ("gradients", "grad_norm", blob.diff)):
                values = backend.to_numpy(array).astype(np.float64, copy=False).ravel()
                self._scalar(writer, f"{norm_tag}/{name}", float(np.sqrt(values.dot(values))), solver.iter)
                if np.isfinite(values).all():
                    writer.add_histogram(f"{kind}/{name}", values, solver.iter)

    def on_solve_end(self, solver):
        self.flush()

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


__all__ = ["TensorBoardWriter", "output_tags", "param_blobs"]
