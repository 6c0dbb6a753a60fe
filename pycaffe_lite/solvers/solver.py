"""The Solver: Caffe's training loop, test passes, snapshots and resumes.

One iteration is Caffe's Solver::Step body, in its order:

    clear the parameter diffs
    test every test net when iter % test_interval == 0
    iter_size x (forward + backward), the diffs adding up
    log the (smoothed) loss and the train net's outputs every `display`
    apply_update():  learning rate (lr_policy)
                     clip_gradients (on the diffs summed over iter_size)
                     per parameter: normalize (diff /= iter_size),
                                    regularize (weight_decay * decay_mult, L2 or L1),
                                    compute_update_value (the solver type's rule),
                                    data -= diff (net.update(), in place)
                     (SGD on NumPy arrays does the four in one fused pass, kernels/updates.py)
                     every layer's after_update(): layers in fixed point round their
                     parameters (so the update), binary layers clip their latent weights
    iter += 1, snapshot every `snapshot` iterations or when a signal asks

A solver type (sgd.py, adaptive.py) overrides `compute_update_value` and, when
it keeps more history than one buffer per parameter, `history_slots`; it
registers itself under Caffe's `type` string with `register_solver`.

Everything is computed in the parameters' dtype (float32 for Caffe's nets),
with Caffe's order of operations, so that a run reproduces BVLC Caffe's
losses and weights to float32 rounding.
"""
import contextlib
import logging
import math
import os
import tempfile
import time

import numpy as np
from google.protobuf import text_format

from .. import backend
from .. import data as data_config
from ..backend import get_array_module
from ..kernels import jit_log
from ..net import TEST, TRAIN, Net
from ..io_utils import FormatError
from ..proto.files import check_finite, read_net_param, read_solver_param
from ..proto import caffe_pb2
from ..proto.upgrade import upgrade_snapshot_prefix
from ..proto.types import type_name, type_of_dtype
from ..kernels import updates
from . import snapshots
from . import state as state_io
from .lr_policy import check_policy, learning_rate
from .signals import SolverAction

log = logging.getLogger("pycaffe_lite.solver")

_SOLVERS = {}


def register_solver(type_name):
    """Class decorator: the solver for `type: "<type_name>"` in a solver prototxt."""
    def decorate(cls):
        if type_name in _SOLVERS:
            raise ValueError(f"solver type '{type_name}' is registered twice")
        cls.type = type_name
        _SOLVERS[type_name] = cls
        return cls
    return decorate


def solver_types():
    return sorted(_SOLVERS)


def solver_class(type_name):
    try:
        return _SOLVERS[type_name]
    except KeyError:
        raise ValueError(f"Unknown solver type: '{type_name}' (known types: "
                         + ", ".join(solver_types()) + ")") from None


def read_solver_file(path):
    """A SolverParameter from a prototxt: legacy solver_type upgraded, snapshot_prefix defaulted
    as Caffe's ReadSolverParamsFromTextFileOrDie does."""
    path = os.fspath(path)
    param = read_solver_param(path)
    upgrade_snapshot_prefix(param, path)
    return param


def get_solver(solver, **kwargs):
    """pycaffe's caffe.get_solver: the solver named by the file's `type` (SGD by default)."""
    param = _as_solver_param(solver)
    return solver_class(param.type)(param, **kwargs)


def _as_solver_param(solver):
    if isinstance(solver, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver)
        from ..proto.upgrade import upgrade_solver
        upgrade_solver(param)
        check_finite(param, "<SolverParameter>")
        return param
    return read_solver_file(solver)


def weights_files(param):
    """The files the solver's `weights` entries name, in order: each entry may list several,
    separated by ',', and each name is trimmed of white space (Caffe's LoadNetWeights).
    `caffe train --weights W` replaces the entries with W; --snapshot clears them."""
    files = []
    for entry in param.weights:
        for name in entry.split(","):
            name = name.strip(" \t\n\v\f\r")
            if not name:
                raise ValueError(f"weights '{entry}': an empty file name in the list (names are separated by ',')")
            files.append(name)
    return files


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient stopped training (after a snapshot of the last good state)."""


def _fmt(value):
    """C++ ostream's default formatting of a float (6 significant digits), as Caffe's logs print."""
    return "%g" % float(value)


class Solver:
    """Base of every solver type: builds the nets and runs Caffe's fixed training sequence.

    Solver(solver_prototxt_or_SolverParameter, *, allow_python=None, dtype=np.float32)
    Attributes as pycaffe's: net, test_nets, iter, param; methods step(n), solve(resume_file=None),
    restore(state_file), snapshot(), apply_update(), add_callback(on_start, on_gradients_ready),
    share_weights(net).
    """
    type = None

    def __init__(self, solver, *, allow_python=None, dtype=np.float32):
        param = _as_solver_param(solver)
        if param.type != self.type and self.type is not None:
            # pycaffe's SGDSolver(file) ignores the file's type; say so rather than surprise.
            log.info("Solver type in the file is '%s'; building a %s solver as asked", param.type, self.type)
        self.param = param
        self.allow_python = allow_python
        self.dtype = np.dtype(dtype)
        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        self.callbacks = []
        self.action_function = None
        # Objects told of the run, each through the methods it has (see add_observer): the CLI's
        # progress bar, TensorBoard's writer (add_tensorboard).
        self.observers = []
        self.rate = None             # the learning rate of the last update
        self.losses, self.smoothed_loss = [], np.float32(0)
        self.iterations_last = 0
        self.test_results = []       # per test net: [(output name, mean score, loss weight)]
        # Several ranks training one model: a distributed.DataParallel sets itself here; it splits
        # the test iterations, sums their scores and makes the ranks agree on signals.
        self.sync = None
        log.info("Initializing solver from parameters: \n%s", text_format.MessageToString(param))
        self._check_param()
        if param.random_seed >= 0:     # Caffe 1.0: each solver rank its own stream
            backend.set_random_seed(param.random_seed + data_config.solver_rank())
        if data_config.solver_rank() == 0:     # the root solver alone snapshots (and probes)
            self._check_snapshot_write_permissions()
        self.run_id = snapshots.new_run_id()   # written into both files of each snapshot pair
        self._stale_cleaned = False
        # each weights file is read once, then copied into every net as it is built
        finetune = [(path, state_io.read_trained_layers(path)) for path in weights_files(param)]
        self.net = self._init_train_net(finetune)
        self.test_nets = self._init_test_nets(finetune)
        for test_net in self.test_nets:
            test_net.share_trained_layers(self.net)
        self._init_buffers()
        log.info("Solver scaffolding done.")

    # ------------------------------------------------------------------
    # set-up
    # ------------------------------------------------------------------
    def _check_param(self):
        p = self.param
        if p.average_loss < 1:
            raise ValueError(f"average_loss should be at least 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise ValueError(f"iter_size should be at least 1, got {p.iter_size}")
        if p.regularization_type not in ("L1", "L2"):
            raise ValueError(f"Unknown regularization type: '{p.regularization_type}' (use L2 or L1)")
        check_policy(p)
        if p.HasField("solver_data_type") and p.solver_data_type != type_of_dtype(self.dtype):
            raise NotImplementedError(   # master weights of another type than the net's: issue 18
                f"solver_data_type {type_name(p.solver_data_type)} is parsed but not yet supported: this "
                f"solver keeps weights and history in the net's {self.dtype}")
        self.check_settings()

    def check_settings(self):
        """Solver-type specific checks of self.param (raise ValueError)."""

    def _check_snapshot_write_permissions(self):
        if not self.param.snapshot:
            return
        if not self.param.HasField("snapshot_prefix"):
            raise ValueError("In solver params, snapshot is specified but snapshot_prefix is not")
        # a fresh temporary (O_EXCL): never opens, and so never truncates, an existing file or a symlink's target
        prefix = self.param.snapshot_prefix
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(prefix)}_iter_{self.iter}.probe.",
                                         suffix=".tmp", dir=os.path.dirname(os.path.abspath(prefix)))
            os.close(fd)
            os.remove(probe)
        except OSError:
            raise ValueError(f"Cannot write to snapshot prefix '{prefix}'.  Make sure "
                             "that the directory exists and is writeable.") from None

    @contextlib.contextmanager
    def _snapshot_prefix_held(self):
        """While training or snapshotting: one training per snapshot_prefix (snapshots.py); the first
        time, what a killed run of the prefix left is removed."""
        prefix = self.param.snapshot_prefix
        if not self.is_root or not prefix or not os.path.isdir(os.path.dirname(os.path.abspath(prefix))):
            yield   # only the root solver writes; nothing can be written there: Caffe too fails when it snapshots
            return
        lock = snapshots.PrefixLock(prefix).acquire()
        try:
            if not self._stale_cleaned:
                snapshots.clean_stale_temporaries(prefix)
                self._stale_cleaned = True
            yield
        finally:
            lock.release()

    def _make_net(self, net_param, phase, finetune):
        """A train or test net, with the `weights` entries ((path, read_trained_layers(path)))
        loaded into it as soon as it is built (Caffe's LoadNetWeights in InitTrainNet / InitTestNets)."""
        net = Net(net_param, phase=phase, allow_python=self.allow_python, dtype=self.dtype)
        try:
            for path, trained in finetune:
                log.info("Finetuning from %s", path)
                state_io.copy_weights(net, path, trained)
        except BaseException:
            net.close()
            raise
        return net

    def _init_train_net(self, finetune):
        p = self.param
        fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if len(fields) != 1:
            raise ValueError("SolverParameter must specify exactly one train net with one of these fields: "
                             f"net, net_param, train_net, train_net_param (found: {', '.join(fields) or 'none'})")
        field = fields[0]
        if field.endswith("_param"):
            log.info("Creating training net specified in %s.", field)
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(getattr(p, field))
        else:
            log.info("Creating training net from %s file: %s", field, getattr(p, field))
            net_param = read_net_param(getattr(p, field))
        # NetState precedence: solver defaults < the net's own state < train_state.
        net_state = caffe_pb2.NetState()
        net_state.phase = TRAIN
        net_state.MergeFrom(net_param.state)
        net_state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(net_state)
        return self._make_net(net_param, net_state.phase, finetune)

    def _init_test_nets(self, finetune):
        p = self.param
        generic = p.HasField("net_param") + p.HasField("net")
        if generic > 1:
            raise ValueError("Both net_param and net file may not be specified.")
        num_test_nets = len(p.test_net_param) + len(p.test_net)
        if (len(p.test_iter) < num_test_nets) if generic else (len(p.test_iter) != num_test_nets):
            raise ValueError(f"test_iter must be specified for each test network: {len(p.test_iter)} "
                             f"test_iter value(s) for {num_test_nets} test_net/test_net_param net(s)")
        instances = num_test_nets + (len(p.test_iter) - num_test_nets)
        if p.test_state and len(p.test_state) != instances:
            raise ValueError(f"test_state must be unspecified or specified once per test net: "
                             f"{len(p.test_state)} test_state(s) for {instances} test net(s)")
        if instances and p.test_interval <= 0:
            raise ValueError(f"test_interval must be > 0 when there are test nets (test_iter is given), "
                             f"got {p.test_interval}")
        sources = []
        for net_param in p.test_net_param:
            copy = caffe_pb2.NetParameter()
            copy.CopyFrom(net_param)
            sources.append(("test_net_param", copy))
        for path in p.test_net:
            sources.append((f"test_net file: {path}", read_net_param(path)))
        remaining = len(p.test_iter) - len(sources)
        for _ in range(remaining if generic else 0):
            if p.HasField("net_param"):
                copy = caffe_pb2.NetParameter()
                copy.CopyFrom(p.net_param)
                sources.append(("net_param", copy))
            else:
                sources.append((f"net file: {p.net}", read_net_param(p.net)))
        nets = []
        for i, (source, net_param) in enumerate(sources):
            net_state = caffe_pb2.NetState()
            net_state.phase = TEST
            net_state.MergeFrom(net_param.state)
            if p.test_state:
                net_state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(net_state)
            log.info("Creating test net (#%d) specified by %s", i, source)
            nets.append(self._make_net(net_param, net_state.phase, finetune))
        return nets

    @property
    def params(self):
        return self.net.learnable_params

    def history_slots(self):
        """How many history buffers each parameter keeps (saved in the .solverstate)."""
        return 1

    def _init_buffers(self):
        """Caffe's PreSolve: history (saved in snapshots), update and temp buffers (scratch)."""
        def zeros_like(blob):
            return get_array_module(blob.data).zeros(blob.shape, blob.dtype)
        params = self.params
        self.history = [zeros_like(p) for _ in range(self.history_slots()) for p in params]
        self.update = [zeros_like(p) for p in params]
        self.temp = [zeros_like(p) for p in params]

    # ------------------------------------------------------------------
    # pycaffe API
    # ------------------------------------------------------------------
    @property
    def max_iter(self):
        return self.param.max_iter

    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's Solver.add_callback: called before each iteration and before each update.
        add_callback(nccl) takes an object's on_start and on_gradients_ready methods."""
        if on_gradients_ready is None:
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self.callbacks.append((on_start, on_gradients_ready))

    @property
    def is_root(self):
        """Caffe's root_solver(): the one rank that logs, tests' outputs and snapshots."""
        return self.sync is None or self.sync.root

    def add_observer(self, observer):
        """Tell `observer` of the run through whichever of these methods it has (solver first):
        on_iteration(solver, loss)            after each iteration's forward/backward and update
                                              (solver.iter is still that iteration's number);
        on_display(solver, smoothed_loss, outputs)   every `display`, as the log prints them;
        on_gradients(solver)                  before each update (the diffs are the gradients);
        on_test(solver, test_net_id, means)   after each test pass: [(output, loss weight, values)];
        on_solve_end(solver)                  when solve() returns."""
        self.observers.append(observer)
        return observer

    def add_tensorboard(self, logdir, histograms_every=0):
        """Write TensorBoard event files into `logdir` (pycaffe_lite.solvers.tensorboard; needs
        tensorboardX, the `tensorboard` extra): losses, outputs, learning rate, tests, and every
        `histograms_every` iterations the parameters' and gradients' norms and histograms."""
        from .tensorboard import TensorBoardWriter
        return self.add_observer(TensorBoardWriter(logdir, histograms_every))

    def _notify(self, event, *args):
        for observer in self.observers:
            method = getattr(observer, event, None)
            if method is not None:
                method(self, *args)

    def set_action_function(self, function):
        """A callable returning SolverAction.NONE / STOP / SNAPSHOT, polled as Caffe polls signals."""
        self.action_function = function

    def requested_action(self):
        request = self.action_function() if self.action_function else SolverAction.NONE
        return request if self.sync is None else self.sync.agree(request)

    def share_weights(self, net):
        """pycaffe's share_weights: `net` uses this solver's trained parameters."""
        net.share_trained_layers(self.net)

    def load_weights(self, path):
        """Copy trained layers from a .caffemodel (or Caffe's .caffemodel.h5) into all nets."""
        trained = state_io.read_trained_layers(path)
        for net in [self.net] + self.test_nets:
            state_io.copy_weights(net, path, trained)

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
    def step(self, iters):
        """Run `iters` training iterations (Caffe's Solver::Step)."""
        with self._snapshot_prefix_held():
            self._step(int(iters))

    def _step(self, iters):
        p = self.param
        if data_config.solver_count() > 1 and self.sync is None:
            raise RuntimeError(f"solver_count is {data_config.solver_count()} but this solver has no communicator: "
                               "create caffe.NCCL(solver, uid) and add it with solver.add_callback(nccl) "
                               "(or train with mpirun ... pycaffe-lite train)")
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self.losses, self.smoothed_loss = [], np.float32(0)
        self.iterations_last = self.iter
        timer = time.perf_counter()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self.callbacks:
                on_start()
            display = p.display and self.iter % p.display == 0
            loss = np.float32(0)
            for _ in range(p.iter_size):
                loss += np.float32(self.net.forward_backward())
            loss /= np.float32(p.iter_size)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - self.iterations_last) / (lapse if lapse else 1)
                log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, _fmt(per_s),
                         _fmt(round(lapse, 3)), p.display, _fmt(self.smoothed_loss))
                timer = time.perf_counter()
                self.iterations_last = self.iter
                outputs = self._output_values(self.net)
                self._log_outputs("Train", outputs)
                self._notify("on_display", self.smoothed_loss, outputs)
            for _, on_gradients_ready in self.callbacks:
                on_gradients_ready()
            self._notify("on_gradients")
            self._check_finite(loss)
            self.apply_update()
            self._notify("on_iteration", float(loss))
            self.iter += 1
            jit_log.report_jit_compiles()
            request = self.requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SolverAction.SNAPSHOT:
                self.snapshot()
            if request == SolverAction.STOP:
                self.requested_early_exit = True
                break

    def solve(self, resume_file=None):
        """Train to max_iter (Caffe's Solver::Solve), optionally resuming from a .solverstate."""
        with self._snapshot_prefix_held():
            try:
                self._solve(resume_file)
            finally:
                self._notify("on_solve_end")

    def _solve(self, resume_file):
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = np.float32(self.net.forward_from_to())
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, _fmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss, start_iter, average_loss):
        """Caffe's UpdateSmoothedLoss (float32, running window of `average_loss` losses)."""
        loss = np.float32(loss)
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = np.float32((self.smoothed_loss * np.float32(size - 1) + loss) / np.float32(size))
        else:
            idx = (self.iter - start_iter) % average_loss
            self.smoothed_loss = np.float32(self.smoothed_loss + (loss - self.losses[idx]) / np.float32(average_loss))
            self.losses[idx] = loss

    def _check_finite(self, loss):
        """Stop before an update that would spoil the weights: snapshot the last good state, raise."""
        what = None
        if not math.isfinite(float(loss)):
            what = f"loss = {_fmt(loss)}"
        else:
            diffs = [p.diff for p in self.params if p.has_diff]
            if updates.available(*diffs):
                finite = updates.all_finite(diffs)
            else:
                finite = math.isfinite(float(sum(d.sum() for d in diffs)))
            if not finite:
                what = f"the gradients are not finite (loss = {_fmt(loss)})"
        if what is None:
            return
        files = self.snapshot()
        raise TrainingDiverged(
            f"Iteration {self.iter}: {what}; training stopped. The last good state (the weights before "
            f"this iteration's update) is in {' and '.join(files)}. Lower base_lr or set clip_gradients.")

    def _output_values(self, net):
        """[(output name, loss weight, flat values)] in Caffe's output order."""
        out = []
        for name in net.outputs:
            values = backend.to_numpy(net.blobs[name].data).ravel()
            out.append((name, net.blob_loss_weights.get(name, 0.0), values))
        return out

    @staticmethod
    def _log_outputs(which, outputs):
        """Caffe's `    Train net output #k: name = v (* w = w*v loss)`, one line per output value."""
        index = 0
        for name, weight, values in outputs:
            for value in values:
                value = np.float32(value)
                extra = f" (* {_fmt(weight)} = {_fmt(np.float32(weight) * value)} loss)" if weight else ""
                log.info("    %s net output #%d: %s = %s%s", which, index, name, _fmt(value), extra)
                index += 1

    # ------------------------------------------------------------------
    # the update sequence (Caffe's SGDSolver::ApplyUpdate)
    # ------------------------------------------------------------------
    def get_learning_rate(self):
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    def apply_update(self):
        rate = self.rate = self.get_learning_rate()
        p = self.param
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, _fmt(np.float32(rate)))
        self.clip_gradients()
        for i in range(len(self.params)):
            self.update_param(i, rate)
        self.net.after_update()

    def update_param(self, i, rate):
        """Caffe's per-parameter sequence, then net.update()'s data -= diff for this parameter."""
        self.normalize(i)
        self.regularize(i)
        self.compute_update_value(i, rate)
        blob = self.params[i]
        blob.data -= blob.diff

    def clip_gradients(self):
        clip = self.param.clip_gradients
        if clip < 0:
            return
        sumsq = 0.0
        for blob in self.params:
            diff = blob.diff.ravel()
            sumsq += float(diff.dot(diff))
        l2norm = math.sqrt(sumsq)
        if l2norm > clip:
            scale = clip / l2norm
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                     _fmt(l2norm), _fmt(clip), _fmt(scale))
            for blob in self.params:
                blob.diff *= blob.dtype.type(scale)

    def normalize(self, i):
        iter_size = self.param.iter_size
        if iter_size == 1:
            return
        blob = self.params[i]
        blob.diff *= blob.dtype.type(1.0) / blob.dtype.type(iter_size)

    def regularize(self, i):
        blob = self.params[i]
        dt = blob.dtype.type
        local_decay = dt(self.param.weight_decay) * dt(self.net.params_weight_decay[i])
        if not local_decay:
            return
        xp = get_array_module(blob.data)
        temp = self.temp[i]
        if self.param.regularization_type == "L2":
            xp.multiply(blob.data, local_decay, out=temp)
        else:  # L1
            xp.sign(blob.data, out=temp)
            temp *= local_decay
        blob.diff += temp

    def local_rate(self, i, rate):
        dt = self.params[i].dtype.type
        return dt(rate) * dt(self.net.params_lr[i])

    def compute_update_value(self, i, rate):
        """Turn params[i].diff into the step that net.update() subtracts; keep the history."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_update_value")

    # ------------------------------------------------------------------
    # testing
    # ------------------------------------------------------------------
    def test_all(self):
        self.test_results = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id=0):
        """One test pass: test_iter forward passes, the mean of each output logged (Caffe's Test)."""
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        test_net = self.test_nets[test_net_id]
        test_net.share_trained_layers(self.net)
        iterations = p.test_iter[test_net_id]
        # with several ranks, rank r runs iterations r, r+n, ...: every rank polls in every round
        rounds = [True] * iterations if self.sync is None else self.sync.test_rounds(iterations)
        outputs = self._output_values(test_net)
        scores = [np.zeros(values.size, np.float32) for _, _, values in outputs]
        loss = np.float32(0)
        for runs in rounds:
            request = self.requested_action()
            while request != SolverAction.NONE:
                if request == SolverAction.SNAPSHOT:
                    self.snapshot()
                elif request == SolverAction.STOP:
                    self.requested_early_exit = True
                request = self.requested_action()
            if self.requested_early_exit:
                break
            if not runs:
                continue
            iter_loss = np.float32(test_net.forward_from_to())
            if p.test_compute_loss:
                loss += iter_loss
            outputs = self._output_values(test_net)
            for total, (_, _, values) in zip(scores, outputs):
                total += values
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return
        if self.sync is not None:
            *scores, loss = self.sync.reduce_sums(scores + [loss], f"the test outputs of iteration {self.iter}")
        if p.test_compute_loss and iterations:
            log.info("Test loss: %s", _fmt(loss / np.float32(iterations)))
        means = [(name, weight, total / np.float32(iterations))
                 for (name, weight, _), total in zip(outputs, scores)]
        self._log_outputs("Test", means)
        self._notify("on_test", test_net_id, means)
        self.test_results.append([(name, float(mean), weight) for name, weight, values in means for mean in values])

    # ------------------------------------------------------------------
    # snapshots
    # ------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write <prefix>_iter_N.caffemodel and .solverstate (atomically); return the two paths.
        With several ranks only rank 0 writes (the others return [])."""
        if not self.is_root:
            return []
        with self._snapshot_prefix_held():
            return self._snapshot()

    def _snapshot(self):
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        if hdf5:
            state_io.require_h5py()
            model_filename = self.snapshot_filename(".caffemodel.h5")
            log.info("Snapshotting to HDF5 file %s", model_filename)
            self.net.save_hdf5(model_filename, self.param.snapshot_diff, attributes={"run_id": self.run_id})
        else:
            model_filename = self.snapshot_filename(".caffemodel")
            log.info("Snapshotting to binary proto file %s", model_filename)
            weights = self.net.to_proto(write_diff=self.param.snapshot_diff)
            weights.run_id = self.run_id
            state_io.write_proto(model_filename, weights)
        state_filename = self.snapshot_solver_state(model_filename, hdf5)
        return [model_filename, state_filename]

    def snapshot_solver_state(self, model_filename, hdf5=False):
        if hdf5:
            filename = self.snapshot_filename(".solverstate.h5")
            log.info("Snapshotting solver state to HDF5 file %s", filename)
            state_io.save_state_hdf5(filename, self.iter, model_filename, self.current_step, self.history,
                                     self.run_id)
        else:
            filename = self.snapshot_filename(".solverstate")
            log.info("Snapshotting solver state to binary proto file %s", filename)
            state_io.write_proto(filename, state_io.make_state(self.iter, model_filename,
                                                               self.current_step, self.history, self.run_id))
        return filename

    def restore(self, state_file):
        """Resume from a .solverstate (or .solverstate.h5): iteration, schedule step, history, weights."""
        state_file = os.fspath(state_file)

        def check_sizes(sizes):
            if len(sizes) != len(self.history):
                raise FormatError(f"{state_file}: Incorrect length of history blobs: the state holds "
                                 f"{len(sizes)}, a {self.type} solver for this net needs {len(self.history)}")
            for i, (target, size) in enumerate(zip(self.history, sizes)):
                if size != target.size:
                    raise FormatError(f"{state_file}: history blob {i} holds {size} values for a "
                                     f"parameter of shape {tuple(target.shape)}")

        # Check everything before changing anything: a refused state leaves the solver as it was.
        if state_file.endswith(".h5"):
            iteration, learned_net, current_step, history = state_io.load_state_hdf5(state_file, check_sizes)
            run_id = state_io.state_pair(state_file)[1]
        else:
            state = state_io.read_state(state_file)
            iteration, current_step, run_id = state.iter, state.current_step, state.run_id
            learned_net = state.learned_net if state.HasField("learned_net") else None
            history = [state_io.history_array(blob) for blob in state.history]
            check_sizes([values.size for values in history])
        if learned_net:
            weights_file = state_io.resolve_learned_net(learned_net, state_file)
            trained = state_io.read_trained_layers(weights_file)
            weights_id = trained.run_id if hasattr(trained, "run_id") else None
            snapshots.check_pair(state_file, run_id, weights_file, weights_id)
            state_io.copy_weights(self.net, weights_file, trained)
        log.info("SGDSolver: restoring history")   # Caffe's wording, whatever the solver type
        for target, values in zip(self.history, history):
            target[...] = get_array_module(target).asarray(values.reshape(target.shape), dtype=target.dtype)
        self.iter, self.current_step = int(iteration), int(current_step)
