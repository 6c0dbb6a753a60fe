"""Common layers: products, softmax, elementwise sums, normalisation and reductions,
scale and bias (Caffe's common_layers; the layers that only move or reshape data
are in shape.py), with Caffe's axis rules.

    layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
            inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }

Axes follow Caffe's CanonicalAxisIndex: a negative axis counts from the end.
"""
import numpy as np

from .. import backend
from ..backend import get_array_module
from ..geometry import SAME, WHOLE
from ..kernels.elementwise import channel_affine
from ..layer import Layer, onnx_export, register
from ..proto import caffe_pb2


# ---- helpers shared by the layers of this family -----------------------------
def canonical_axis(layer, axis, num_axes, what="axis"):
    """Caffe's CanonicalAxisIndex with an error that names the layer."""
    if not -num_axes <= axis < num_axes:
        raise ValueError(layer.error(f"{what} {axis} is out of range for a blob with {num_axes} axes"))
    return axis + num_axes if axis < 0 else axis


def count(shape, start=0, end=None):
    return int(np.prod(shape[start:end], dtype=np.int64))


def scatter_add(xp, target, index, values):
    """target[index] += values, adding repeated indices (np.add.at / cupyx.scatter_add)."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


def _shape(blob_shape):
    return tuple(int(d) for d in blob_shape.dim)


# ---- InnerProduct ---------------------------------------------------------------
@register("InnerProduct", v1="INNER_PRODUCT")
class InnerProductLayer(Layer):
    """Fully connected layer over the axes from `axis` on.

    bottom (d0 .. d_{a-1}, d_a .. d_n) is read as X (M, K), M = d0*..*d_{a-1}, K = d_a*..*d_n;
    top (d0 .. d_{a-1}, N) = X W^T + b, with N = num_output.
    blobs[0] W: (N, K), or (K, N) with transpose (then top = X W + b);  blobs[1] b: (N,).
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = WHOLE

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        p = layer_param.inner_product_param
        N = int(p.num_output)
        K = cls._inputs(p, bottom_shapes[0]) if bottom_shapes else None
        return [(K, N) if p.transpose else (N, K)] + [(N,)] * bool(p.bias_term)

    @classmethod
    def madds(cls, layer_param, bottom_shapes, top_shapes):
        """Per output element, K."""
        return count(top_shapes[0]) * cls._inputs(layer_param.inner_product_param, bottom_shapes[0])

    @staticmethod
    def _inputs(p, bottom_shape):
        """K: the elements of the bottom's axes from `axis` on."""
        shape = tuple(bottom_shape)
        return count(shape, p.axis + len(shape) if p.axis < 0 else p.axis)

    def setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        if p.num_output <= 0:
            raise ValueError(self.error(f"needs inner_product_param {{ num_output }} > 0, got {p.num_output}"))
        self.num_output, self.bias_term, self.transpose = int(p.num_output), p.bias_term, p.transpose
        axis = canonical_axis(self, p.axis, len(bottom[0].shape))
        self.K = count(bottom[0].shape, axis)
        N, K = self.num_output, self.K
        weight_shape = (K, N) if self.transpose else (N, K)
        if not self.blobs:
            dtype = bottom[0].dtype
            self.blobs.append(self.fill_param(weight_shape, p.weight_filler, dtype, like=bottom[0]))
            if self.bias_term:
                self.blobs.append(self.fill_param((N,), p.bias_filler, dtype, like=bottom[0]))
        wanted = [weight_shape] + ([(N,)] if self.bias_term else [])
        if [b.shape for b in self.blobs] != wanted:
            raise ValueError(self.error(f"has parameter shapes {[b.shape for b in self.blobs]}, "
                                        f"expected {wanted}"))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(self, self.layer_param.inner_product_param.axis, len(shape))
        if count(shape, self.axis) != self.K:
            raise ValueError(self.error(f"input size incompatible with inner product parameters: bottom shape "
                                        f"{shape} gives K = {count(shape, self.axis)} from axis {self.axis}, "
                                        f"the weights need K = {self.K}"))
        self.M = count(shape, 0, self.axis)
        top[0].reshape(shape[:self.axis] + (self.num_output,))

    # Hooks a subclass overrides to multiply other values through the same code (the binary
    # layers: sign(x), sign(W), the bias added after their scale).
    def product_input(self, blob):
        """The bottom's values as the product reads them."""
        return blob.data

    def product_weights(self):
        """W as forward multiplies by it."""
        return self.param_arrays()[0]

    def backward_product_weights(self):
        """W as the top diff is propagated through to the bottom."""
        return self.product_weights()

    def product_bias(self):
        return self.param_arrays()[1] if self.bias_term else None

    def add_weight_diff(self, dw):
        self.blobs[0].diff += dw

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = self.product_input(bottom[0]).reshape(self.M, self.K)
        w = self.product_weights()
        y = top[0].data.reshape(self.M, self.num_output)
        xp.matmul(x, w if self.transpose else w.T, out=y)
        bias = self.product_bias()
        if bias is not None:
            y += bias

    def backward(self, top, propagate_down, bottom):
        xp = get_array_module(top[0].diff)
        g = top[0].diff.reshape(self.M, self.num_output)
        if self.learns_param(0):
            x = self.product_input(bottom[0]).reshape(self.M, self.K)
            self.add_weight_diff((x.T @ g) if self.transpose else (g.T @ x))
        if self.bias_term and self.learns_param(1):
            self.blobs[1].diff += g.sum(axis=0)
        if propagate_down[0]:
            w = self.backward_product_weights()
            xp.matmul(g, w.T if self.transpose else w, out=bottom[0].diff.reshape(self.M, self.K))


# ---- Softmax --------------------------------------------------------------------
@register("Softmax", v1="SOFTMAX")
class SoftmaxLayer(Layer):
    """y = exp(x - max) / sum(exp(x - max)) along `axis` (default 1), independently for
    every position of the other axes.  dL/dx = (g - sum(g * y, axis)) * y.
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.layer_param.softmax_param.axis, len(bottom[0].shape))
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        top[0].data = e / e.sum(axis=self.axis, keepdims=True)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, g = top[0].data, top[0].diff
            bottom[0].diff = (g - (g * y).sum(axis=self.axis, keepdims=True)) * y


# ---- Eltwise --------------------------------------------------------------------
EltwiseOp = caffe_pb2.EltwiseParameter


@register("Eltwise", v1="ELTWISE")
class EltwiseLayer(Layer):
    """Elementwise over bottoms of one shape:
      SUM (default): y = sum_i coeff_i x_i (coeff default 1);   dL/dx_i = coeff_i g
      PROD: y = prod_i x_i;   dL/dx_i = g * prod_{j != i} x_j (stable_prod_grad, default),
            or g * y / x_i
      MAX: y = max_i x_i;   dL/dx_i = g where bottom i gave the max (ties: Caffe's order,
            bottom 1 over bottom 0, then the earliest), else 0
    """
    num_bottom = (2, None)
    num_top = (1, 1)
    field = SAME

    def setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        self.op = p.operation
        if len(p.coeff) not in (0, len(bottom)):
            raise ValueError(self.error(f"takes one coefficient per bottom blob: {len(p.coeff)} coeff "
                                        f"for {len(bottom)} bottoms"))
        if self.op == EltwiseOp.PROD and len(p.coeff):
            raise ValueError(self.error("only takes coefficients for summation (operation SUM)"))
        self.coeffs = [float(c) for c in p.coeff] or [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != bottom[0].shape:
                raise ValueError(self.error(f"needs bottoms of one shape; bottom[0] is {bottom[0].shape}, "
                                            f"bottom[{i}] is {blob.shape}"))
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xs = [b.data for b in bottom]
        self._inputs = xs       # kept for backward, also when top is a bottom
        xp = get_array_module(xs[0])
        if self.op == EltwiseOp.SUM:
            if any(top[0] is b for b in bottom):     # the top is an input: sum aside, then copy in
                top[0].data = self._sum(xp, xs, xp.empty_like(xs[0]))
            else:
                self._sum(xp, xs, top[0].data)       # straight into the top, as Caffe does
            return
        if self.op == EltwiseOp.PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y *= x
        else:
            y, self._argmax = self._max(xp, xs)
        top[0].data = y

    def _sum(self, xp, xs, out):
        """The sum of coeff * x, into `out` (two plain terms take one pass)."""
        c = self.coeffs
        if c[0] == 1 and c[1] == 1:
            xp.add(xs[0], xs[1], out=out)
            done = 2
        else:
            xp.multiply(xs[0], c[0], out=out)
            done = 1
        for x, k in zip(xs[done:], c[done:]):
            out += x * k if k != 1 else x
        return out

    @staticmethod
    def _max(xp, xs):
        """Caffe's MAX: bottom 0 wins over bottom 1 only if strictly larger; later bottoms
        win only if strictly larger than the running max."""
        first = xs[0] > xs[1]
        y = xp.where(first, xs[0], xs[1])
        argmax = xp.where(first, 0, 1).astype(np.int32)
        for k, x in enumerate(xs[2:], 2):
            larger = x > y
            y = xp.where(larger, x, y)
            argmax[larger] = k
        return y, argmax

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff
        y = top[0].data
        xp = get_array_module(g)
        xs = self._inputs
        grads = []
        for i, down in enumerate(propagate_down):
            if not down:
                grads.append(None)
            elif self.op == EltwiseOp.SUM:
                grads.append(g * self.coeffs[i] if self.coeffs[i] != 1 else g.copy())
            elif self.op == EltwiseOp.PROD:
                grads.append(g * self._others_product(xs, i, y))
            else:
                grads.append(xp.where(self._argmax == i, g, 0))
        for i, grad in enumerate(grads):   # assigned last: a bottom may be the top
            if grad is not None:
                bottom[i].diff = grad

    def _others_product(self, xs, i, y):
        if not self.stable_prod_grad:
            return y / xs[i]
        others = [x for j, x in enumerate(xs) if j != i]
        product = others[0].copy()
        for x in others[1:]:
            product *= x
        return product


# ---- MVN ------------------------------------------------------------------------
@register("MVN", v1="MVN")
class MVNLayer(Layer):
    """Mean-variance normalization per sample and channel (per sample with across_channels):
    y = (x - mean) / (std + eps) with std = sqrt(mean((x - mean)^2)); or y = x - mean when
    normalize_variance is false.  Statistics run over the axes after 1 (after 0 across channels).
    Backward (Caffe's): (g - mean(g) - y * mean(g * y)) / (std + eps), or g - mean(g).
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

    def setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance, self.across_channels, self.eps = (
            p.normalize_variance, p.across_channels, float(p.eps))

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def _rows(self, a):
        shape = a.shape
        groups = shape[0] if self.across_channels or len(shape) < 2 else shape[0] * shape[1]
        return a.reshape(groups, -1)

    def forward(self, bottom, top):
        x = self._rows(bottom[0].data)
        y = x - x.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            xp = get_array_module(x)
            self._std = xp.sqrt((y * y).mean(axis=1, keepdims=True)) + self.eps
            y = y / self._std
        top[0].data = y.reshape(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self._rows(top[0].diff)
        d = g - g.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            y = self._rows(top[0].data)
            d = (d - y * (g * y).mean(axis=1, keepdims=True)) / self._std
        bottom[0].diff = d.reshape(bottom[0].shape)


# ---- Embed ----------------------------------------------------------------------
@register("Embed")
class EmbedLayer(Layer):
    """A lookup table: each bottom value is an integer index i in [0, input_dim), replaced
    by row i of W (input_dim, num_output), plus b (num_output,) with bias_term.
    top shape = bottom shape + (num_output,).  No gradient to the indices.
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = WHOLE

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        p = layer_param.embed_param
        return [(int(p.input_dim), int(p.num_output))] + [(int(p.num_output),)] * bool(p.bias_term)

    def setup(self, bottom, top):
        p = self.layer_param.embed_param
        if p.num_output <= 0 or p.input_dim <= 0:
            raise ValueError(self.error(f"needs num_output and input_dim > 0, got num_output {p.num_output} "
                                        f"and input_dim {p.input_dim}"))
        self.num_output, self.input_dim, self.bias_term = int(p.num_output), int(p.input_dim), p.bias_term
        dtype = bottom[0].dtype if bottom[0].dtype.kind == "f" else top[0].dtype
        if not self.blobs:
            self.blobs.append(self.fill_param((self.input_dim, self.num_output), p.weight_filler, dtype,
                                              like=bottom[0]))
            if self.bias_term:
                self.blobs.append(self.fill_param((self.num_output,), p.bias_filler, dtype, like=bottom[0]))

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def _indices(self, values):
        xp = get_array_module(values)
        flat = values.reshape(-1)
        index = flat.astype(np.int64)
        if flat.size and (bool((index != flat).any()) or int(index.min()) < 0
                          or int(index.max()) >= self.input_dim):
            raise ValueError(self.error(f"needs integer indices in [0, {self.input_dim}), got values from "
                                        f"{float(flat.min())} to {float(flat.max())}"))
        return xp.asarray(index)

    def forward(self, bottom, top):
        self._index = self._indices(bottom[0].data)
        y = self.blobs[0].data[self._index]
        if self.bias_term:
            y = y + self.blobs[1].data
        top[0].data = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise ValueError(self.error("can't backpropagate to its input (the indices)"))
        g = top[0].diff.reshape(-1, self.num_output)
        if self.learns_param(0):
            scatter_add(get_array_module(g), self.blobs[0].diff, self._index, g)
        if self.bias_term and self.learns_param(1):
            self.blobs[1].diff += g.sum(axis=0)


# ---- Reduction ------------------------------------------------------------------
ReductionOp = caffe_pb2.ReductionParameter


@register("Reduction")
class ReductionLayer(Layer):
    """Reduces all axes from `axis` (default 0: to a scalar) to one number each, times coeff:
    SUM: coeff * sum x;  ASUM: coeff * sum |x|;  SUMSQ: coeff * sum x^2;  MEAN: coeff * mean x.
    top shape = bottom shape[:axis].
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = WHOLE

    def setup(self, bottom, top):
        p = self.layer_param.reduction_param
        if p.operation not in (ReductionOp.SUM, ReductionOp.ASUM, ReductionOp.SUMSQ, ReductionOp.MEAN):
            raise ValueError(self.error(f"has an unknown reduction operation {p.operation}"))
        self.op = p.operation

    def reshape(self, bottom, top):
        p = self.layer_param.reduction_param
        shape = bottom[0].shape
        axis = canonical_axis(self, p.axis, len(shape)) if shape else 0
        self.num, self.dim = count(shape, 0, axis), count(shape, axis)
        self.coeff = float(p.coeff) / (self.dim if self.op == ReductionOp.MEAN else 1)
        top[0].reshape(shape[:axis])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        xp = get_array_module(x)
        if self.op == ReductionOp.ASUM:
            x = xp.abs(x)
        elif self.op == ReductionOp.SUMSQ:
            x = x * x
        top[0].data = (x.sum(axis=1) * self.coeff).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data.reshape(self.num, self.dim)
        xp = get_array_module(x)
        g = top[0].diff.reshape(self.num, 1) * self.coeff
        if self.op == ReductionOp.ASUM:
            d = xp.sign(x) * g
        elif self.op == ReductionOp.SUMSQ:
            d = 2 * x * g
        else:
            d = xp.broadcast_to(g, x.shape).copy()
        bottom[0].diff = d.reshape(bottom[0].shape)


# ---- ArgMax ---------------------------------------------------------------------
@register("ArgMax", v1="ARGMAX")
class ArgMaxLayer(Layer):
    """Indices (and with out_max_val, values) of the top_k largest entries.

    With `axis`: along that axis; top = bottom shape with that axis set to top_k, holding
    the indices, or the values when out_max_val.  Without: over all axes after the first;
    top (N, 1, top_k) of indices, or (N, 2, top_k) with indices then values when out_max_val
    (padded with 1s to the bottom's number of axes when it has more than 3).
    Ties go to the larger index (Caffe sorts (value, index) pairs descending).
    Runs on the host, as Caffe's does.  No backward.
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

    def setup(self, bottom, top):
        p = self.layer_param.argmax_param
        self.out_max_val, self.top_k, self.has_axis = p.out_max_val, int(p.top_k), p.HasField("axis")
        if self.top_k < 1:
            raise ValueError(self.error(f"needs top_k >= 1, got {self.top_k}"))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.has_axis:
            self.axis = canonical_axis(self, self.layer_param.argmax_param.axis, len(shape))
            dim, top_shape = shape[self.axis], list(shape)
            top_shape[self.axis] = self.top_k
        else:
            dim = count(shape, 1)
            top_shape = [1] * max(len(shape), 3)
            top_shape[0], top_shape[1], top_shape[2] = shape[0], 2 if self.out_max_val else 1, self.top_k
        if self.top_k > dim:
            raise ValueError(self.error(f"needs top_k ({self.top_k}) <= the size searched ({dim}) "
                                        f"for a bottom of shape {shape}"))
        top[0].reshape(tuple(top_shape))

    def forward(self, bottom, top):
        x = backend.to_numpy(bottom[0].data)
        rows = np.moveaxis(x, self.axis, -1) if self.has_axis else x.reshape(x.shape[0], -1)
        dim = rows.shape[-1]
        # A stable sort of the reversed row puts equal values with the larger index first.
        order = np.argsort(-rows[..., ::-1], axis=-1, kind="stable")[..., :self.top_k]
        index = dim - 1 - order
        values = np.take_along_axis(rows, index, axis=-1)
        if self.has_axis:
            out = np.moveaxis(values if self.out_max_val else index, -1, self.axis)
        elif self.out_max_val:
            out = np.stack([index, values], axis=1)
        else:
            out = index[:, None, :]
        xp = get_array_module(bottom[0].data)
        top[0].data = xp.asarray(out.astype(top[0].dtype).reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise NotImplementedError(self.error("has no backward (as in Caffe)"))


# ---- Parameter ------------------------------------------------------------------
@register("Parameter")
class ParameterLayer(Layer):
    """A learned blob as a layer output: top = blobs[0], of parameter_param's shape
    (initialised to zeros, as in Caffe).  Backward adds the top diff to the parameter's."""
    num_bottom = (0, 0)
    num_top = (1, 1)

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        return [_shape(layer_param.parameter_param.shape)]

    def setup(self, bottom, top):
        shape = _shape(self.layer_param.parameter_param.shape)
        if not self.blobs:
            self.blobs.append(self.make_blob(shape, top[0].dtype, like=top[0]))
        top[0].reshape(self.blobs[0].shape)

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)

    def forward(self, bottom, top):
        top[0].data = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        if self.learns_param(0):
            self.blobs[0].diff += top[0].diff


# ---- Scale / Bias ---------------------------------------------------------------
def _operand_axes(layer, x_shape, operand_shape, axis_param, what):
    """Caffe's lining up of a scale/bias blob with bottom[0]: it covers the axes
    [axis, axis + its ndim) (axis 0 for a scalar).  Returns (outer, dim, inner)."""
    n = len(operand_shape)
    axis = 0 if n == 0 else canonical_axis(layer, axis_param, len(x_shape))
    if axis + n > len(x_shape) or tuple(x_shape[axis:axis + n]) != tuple(operand_shape):
        raise ValueError(layer.error(f"{what} shape {tuple(operand_shape)} does not match bottom[0] shape "
                                     f"{x_shape} from axis {axis}"))
    return count(x_shape, 0, axis), count(operand_shape), count(x_shape, axis + n)


def _learned_shape(layer, x_shape, axis_param, num_axes, what):
    """Shape of a learned scale/bias: bottom[0]'s axes [axis, axis + num_axes), -1 = to the end."""
    axis = canonical_axis(layer, axis_param, len(x_shape))
    if num_axes < -1:
        raise ValueError(layer.error(f"num_axes must be non-negative, or -1 to extend to the end, got {num_axes}"))
    if num_axes >= 0 and axis + num_axes > len(x_shape):
        raise ValueError(layer.error(f"{what} blob's shape extends past bottom[0]'s shape {x_shape} when "
                                     f"applied starting with axis {axis} (num_axes {num_axes})"))
    return tuple(x_shape[axis:] if num_axes == -1 else x_shape[axis:axis + num_axes])


def _per_channel_sum(a, outer, dim, inner, shape):
    """Sum of a over the outer and inner axes, in the operand's shape."""
    return a.reshape(outer, dim, inner).sum(axis=(0, 2)).reshape(shape)


def _num_bottoms(layer_param, bottom_shapes):
    return len(bottom_shapes) if bottom_shapes is not None else len(layer_param.bottom)


def _operand_shape(bottom_shapes, axis, num_axes):
    """bottom[0]'s axes [axis, axis + num_axes) (-1: to the end); None when bottom[0] is not known."""
    if not bottom_shapes:
        return None
    shape = tuple(bottom_shapes[0])
    axis = axis + len(shape) if axis < 0 else axis
    return shape[axis:] if num_axes == -1 else shape[axis:axis + num_axes]


@register("Bias")
class BiasLayer(Layer):
    """y = x + b, b broadcast along the axes [axis, axis + b.ndim) of x (default axis 1).
    b is bottom[1] if given, else the learned blobs[0] of bottom[0]'s axes
    [axis, axis + num_axes) (num_axes default 1, -1 = to the end, 0 = scalar), filler default 0.
    dL/dx = g;  dL/db = g summed over the other axes.
    """
    num_bottom = (1, 2)
    num_top = (1, 1)
    field = SAME

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        p = layer_param.bias_param
        if _num_bottoms(layer_param, bottom_shapes) > 1:
            return []
        return [_operand_shape(bottom_shapes, p.axis, p.num_axes)]

    def setup(self, bottom, top):
        p = self.layer_param.bias_param
        if len(bottom) == 1 and not self.blobs:
            shape = _learned_shape(self, bottom[0].shape, p.axis, p.num_axes, "bias")
            self.blobs.append(self.fill_param(shape, p.filler, bottom[0].dtype, like=bottom[0]))

    def reshape(self, bottom, top):
        b = bottom[1] if len(bottom) > 1 else self.blobs[0]
        self.dims = _operand_axes(self, bottom[0].shape, b.shape, self.layer_param.bias_param.axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        b = bottom[1] if len(bottom) > 1 else self.blobs[0]
        outer, dim, inner = self.dims
        x = bottom[0].data
        top[0].data = (x.reshape(outer, dim, inner) + b.data.reshape(1, dim, 1)).reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff
        if len(bottom) == 1:
            if self.learns_param(0):
                self.blobs[0].diff += _per_channel_sum(g, *self.dims, self.blobs[0].shape)
        elif propagate_down[1]:
            bottom[1].diff = _per_channel_sum(g, *self.dims, bottom[1].shape)
        if propagate_down[0] and bottom[0] is not top[0]:
            bottom[0].diff = g


@register("Scale")
class ScaleLayer(Layer):
    """y = x * s (+ b with bias_term), s broadcast along the axes [axis, axis + s.ndim) of x
    (default axis 1).  s is bottom[1] if given, else the learned blobs[0] of bottom[0]'s axes
    [axis, axis + num_axes) (num_axes default 1, -1 = to the end, 0 = scalar), filler default 1.
    With bias_term the bias is the last blob, shaped as a Bias layer with the same axis and
    num_axes (bottom[1]'s ndim when s is a bottom), bias_filler default 0.
    dL/dx = g * s;  dL/ds = g * x summed over the other axes;  dL/db = g summed likewise.
    """
    num_bottom = (1, 2)
    num_top = (1, 1)
    field = SAME

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        p = layer_param.scale_param
        learned = _num_bottoms(layer_param, bottom_shapes) == 1
        shapes = [_operand_shape(bottom_shapes, p.axis, p.num_axes)] if learned else []
        if p.bias_term:
            num_axes = p.num_axes if learned else (len(bottom_shapes[1]) if bottom_shapes else None)
            shapes.append(None if num_axes is None else _operand_shape(bottom_shapes, p.axis, num_axes))
        return shapes

    def setup(self, bottom, top):
        p = self.layer_param.scale_param
        self.bias_term = p.bias_term
        if self.blobs:
            wanted = (len(bottom) == 1) + bool(self.bias_term)
            if len(self.blobs) != wanted:
                raise ValueError(self.error(f"has {len(self.blobs)} parameter blobs, expected {wanted}"))
            return
        x_shape, dtype = bottom[0].shape, bottom[0].dtype
        if len(bottom) == 1:
            shape = _learned_shape(self, x_shape, p.axis, p.num_axes, "scale")
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=1)
            self.blobs.append(self.fill_param(shape, filler, dtype, like=bottom[0]))
        if self.bias_term:
            num_axes = len(bottom[1].shape) if len(bottom) > 1 else p.num_axes
            shape = _learned_shape(self, x_shape, p.axis, num_axes, "bias")
            self.blobs.append(self.fill_param(shape, p.bias_filler, dtype, like=bottom[0]))

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        self.dims = _operand_axes(self, bottom[0].shape, self._scale(bottom).shape, axis, "scale")
        if self.bias_term:
            self.bias_dims = _operand_axes(self, bottom[0].shape, self.blobs[-1].shape, axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        self._x = self.saved_input(bottom, top)      # for the scale gradient
        # written into the top in one pass; the bias lines up as the scale does (same axes)
        bias = self.blobs[-1].data.reshape(-1) if self.bias_term else None
        channel_affine(x.reshape(self.dims), self._scale(bottom).data.reshape(-1), bias,
                       top[0].data.reshape(self.dims))

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff
        scale = self._scale(bottom)
        if self.bias_term and self.learns_param(len(self.blobs) - 1):
            self.blobs[-1].diff += _per_channel_sum(g, *self.bias_dims, self.blobs[-1].shape)
        if len(bottom) == 1:
            if self.learns_param(0):
                scale.diff += _per_channel_sum(g * self._x, *self.dims, scale.shape)
        elif propagate_down[1]:
            scale.diff = _per_channel_sum(g * self._x, *self.dims, scale.shape)
        if propagate_down[0]:
            outer, dim, inner = self.dims
            bottom[0].diff = (g.reshape(outer, dim, inner) * scale.data.reshape(1, dim, 1)).reshape(g.shape)


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("InnerProduct")
def _inner_product_to_onnx(g, layer, bottoms, tops):
    q, name, y = layer.layer_param.inner_product_param, layer.name, tops[0]
    weight, *bias = g.params(layer)
    flat = g.tmp(name, "flat")
    g.node("Flatten", bottoms[:1], [flat], name=f"{name}/flatten", axis=int(q.axis))
    inputs = [flat, g.const(f"{name}/W", weight)]
    if bias:
        inputs.append(g.const(f"{name}/B", bias[0]))
    out_shape = g.shape(y)
    gemm_out = y if len(out_shape) == 2 else g.tmp(name, "gemm")
    g.node("Gemm", inputs, [gemm_out], name=name, transB=0 if q.transpose else 1)
    if gemm_out != y:
        g.node("Reshape", [gemm_out, g.const(f"{name}/shape", np.array(out_shape, np.int64))], [y],
               name=f"{name}/reshape")


@onnx_export("Softmax")
def _softmax_to_onnx(g, layer, bottoms, tops):
    g.node("Softmax", bottoms, tops, name=layer.name, axis=int(layer.layer_param.softmax_param.axis))


@onnx_export("Eltwise")
def _eltwise_to_onnx(g, layer, bottoms, tops):
    q, name, y = layer.layer_param.eltwise_param, layer.name, tops[0]
    if q.operation == EltwiseOp.SUM:      # with optional coefficients
        terms = []
        coeffs = list(q.coeff) or [1.0] * len(bottoms)
        for i, (b, c) in enumerate(zip(bottoms, coeffs)):
            if c == 1:
                terms.append(b)
            else:
                t = g.tmp(name, f"coeff{i}")
                g.node("Mul", [b, g.const(f"{name}/c{i}", np.array(c, np.float32))], [t], name=f"{name}/mul{i}")
                terms.append(t)
        g.node("Sum", terms, [y], name=name)
    elif q.operation == EltwiseOp.PROD:
        if len(bottoms) == 2:
            g.node("Mul", bottoms, [y], name=name)
        else:
            cur = bottoms[0]
            for i, b in enumerate(bottoms[1:]):
                nxt = y if i == len(bottoms) - 2 else g.tmp(name, f"prod{i}")
                g.node("Mul", [cur, b], [nxt], name=f"{name}/mul{i}")
                cur = nxt
    else:
        g.node("Max", bottoms, [y], name=name)


@onnx_export("Scale", "Bias")
def _scale_bias_to_onnx(g, layer, bottoms, tops):
    p, name, y = layer.layer_param, layer.name, tops[0]
    q = p.scale_param if layer.type == "Scale" else p.bias_param
    params = g.params(layer)
    in_shape = g.shape(bottoms[0])
    axis = q.axis if q.axis >= 0 else len(in_shape) + q.axis

    def broadcast(array):
        return array.reshape(array.shape + (1,) * (len(in_shape) - axis - array.ndim))

    cur = bottoms[0]
    if layer.type == "Scale":
        if len(bottoms) > 1:
            factor = bottoms[1]
            other = g.shape(bottoms[1])
            trailing = len(in_shape) - axis - len(other)
            if trailing:
                shaped = g.tmp(name, "factor")
                g.node("Reshape", [factor, g.const(f"{name}/fshape", np.array(
                    list(other) + [1] * trailing, np.int64))], [shaped], name=f"{name}/reshape")
                factor = shaped
            rest = params
        else:
            factor = g.const(f"{name}/gamma", broadcast(params[0]))
            rest = params[1:]
        out = y if not rest else g.tmp(name, "scaled")
        g.node("Mul", [cur, factor], [out], name=name if not rest else f"{name}/mul")
        cur = out
        bias = rest[0] if rest else None
    else:
        bias = params[0] if params else None
        if bias is None:
            g.node("Add", [cur, bottoms[1]], [y], name=name)
            return
    if bias is not None:
        g.node("Add", [cur, g.const(f"{name}/beta", broadcast(bias))], [y], name=f"{name}/add")
