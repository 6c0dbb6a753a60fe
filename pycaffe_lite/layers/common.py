"""Common layers: products, softmax, and the layers that join, split, reshape and
reduce blobs (Caffe's common_layers), with Caffe's axis rules.

    layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
            inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }

Axes follow Caffe's CanonicalAxisIndex: a negative axis counts from the end.
Layers that share memory in Caffe (Flatten, Reshape, a one-way Concat or
Slice) hand the top a view of the bottom's array in `forward` and give the
bottom a view of the top's diff in `backward`.
"""
import numpy as np

from .. import backend
from ..backend import get_array_module
from ..layer import Layer, register
from ..proto import caffe_pb2


# ---- helpers shared by the layers of this family -----------------------------
def canonical_axis(layer, axis, num_axes, what="axis"):
    """Caffe's CanonicalAxisIndex with an error that names the layer."""
    if not -num_axes <= axis < num_axes:
        raise ValueError(layer.error(f"{what} {axis} is out of range for a blob with {num_axes} axes"))
    return axis + num_axes if axis < 0 else axis


def count(shape, start=0, end=None):
    return int(np.prod(shape[start:end], dtype=np.int64))


def param_wanted(layer, i):
    """Whether parameter i needs a gradient: the Net sets `param_propagate_down`
    from lr_mult (Caffe's set_param_propagate_down); True when it is not set."""
    flags = getattr(layer, "param_propagate_down", None)
    return True if flags is None or i >= len(flags) else bool(flags[i])


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

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(self.M, self.K)
        w = self.blobs[0].data
        y = top[0].data.reshape(self.M, self.num_output)
        xp.matmul(x, w if self.transpose else w.T, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        xp = get_array_module(top[0].diff)
        g = top[0].diff.reshape(self.M, self.num_output)
        x = bottom[0].data.reshape(self.M, self.K)
        if param_wanted(self, 0):
            if self.transpose:
                backend.matmul_add(x.T, g, self.blobs[0].diff)
            else:
                backend.matmul_add(g.T, x, self.blobs[0].diff)
        if self.bias_term and param_wanted(self, 1):
            self.blobs[1].diff += g.sum(axis=0)
        if propagate_down[0]:
            w = self.blobs[0].data
            xp.matmul(g, w.T if self.transpose else w, out=bottom[0].diff.reshape(self.M, self.K))


# ---- Softmax --------------------------------------------------------------------
@register("Softmax", v1="SOFTMAX")
class SoftmaxLayer(Layer):
    """y = exp(x - max) / sum(exp(x - max)) along `axis` (default 1), independently for
    every position of the other axes.  dL/dx = (g - sum(g * y, axis)) * y.
    """
    num_bottom = (1, 1)
    num_top = (1, 1)

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


# ---- Concat / Slice -------------------------------------------------------------
def _legacy_axis(layer, param, legacy_field, shape):
    """`axis`, or the deprecated non-negative `<legacy_field>` (concat_dim, slice_dim)."""
    if param.HasField(legacy_field):
        axis = int(getattr(param, legacy_field))
        if axis >= len(shape):
            raise ValueError(layer.error(f"{legacy_field} {axis} is out of range for a blob of shape {shape}"))
        return axis
    return canonical_axis(layer, param.axis, len(shape))


def _axis_or_legacy_check(layer, param, legacy_field):
    if param.HasField("axis") and param.HasField(legacy_field):
        raise ValueError(layer.error(f"takes either axis or {legacy_field}, not both"))


def _along(axis, start, stop):
    """An index selecting start:stop along `axis`."""
    return (slice(None),) * axis + (slice(start, stop),)


@register("Concat", v1="CONCAT")
class ConcatLayer(Layer):
    """Joins the bottoms along `axis` (default 1; legacy `concat_dim`); all other axes must agree.
    Backward hands each bottom its part of the top diff.  One bottom: the top shares it.
    """
    num_bottom = (1, None)
    num_top = (1, 1)

    def setup(self, bottom, top):
        _axis_or_legacy_check(self, self.layer_param.concat_param, "concat_dim")

    def reshape(self, bottom, top):
        first = bottom[0].shape
        self.axis = _legacy_axis(self, self.layer_param.concat_param, "concat_dim", first)
        total = 0
        for i, blob in enumerate(bottom):
            same = len(blob.shape) == len(first) and all(
                a == b for j, (a, b) in enumerate(zip(blob.shape, first)) if j != self.axis)
            if not same:
                raise ValueError(self.error(f"needs all inputs to have the same shape except at the concat axis "
                                            f"{self.axis}; bottom[0] is {first}, bottom[{i}] is {blob.shape}"))
            total += blob.shape[self.axis]
        top[0].reshape(first[:self.axis] + (total,) + first[self.axis + 1:])

    def forward(self, bottom, top):
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            return
        xp = get_array_module(bottom[0].data)
        top[0].data = xp.concatenate([b.data for b in bottom], axis=self.axis)

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff
        if len(bottom) == 1:
            if propagate_down[0]:
                bottom[0].diff = g
            return
        offset = 0
        for blob, down in zip(bottom, propagate_down):
            size = blob.shape[self.axis]
            if down:
                blob.diff = g[_along(self.axis, offset, offset + size)]
            offset += size


@register("Slice", v1="SLICE")
class SliceLayer(Layer):
    """Cuts the bottom along `axis` (default 1; legacy `slice_dim`) at the `slice_point`s
    (one fewer than the tops, increasing), or into equal parts when none are given.
    Backward joins the top diffs.  One top: it shares the bottom.
    """
    num_bottom = (1, 1)
    num_top = (1, None)

    def setup(self, bottom, top):
        _axis_or_legacy_check(self, self.layer_param.slice_param, "slice_dim")

    def reshape(self, bottom, top):
        p = self.layer_param.slice_param
        shape = bottom[0].shape
        self.axis = _legacy_axis(self, p, "slice_dim", shape)
        dim = shape[self.axis]
        self.sizes = self._sizes(list(p.slice_point), dim, len(top))
        for blob, size in zip(top, self.sizes):
            blob.reshape(shape[:self.axis] + (size,) + shape[self.axis + 1:])

    def _sizes(self, points, dim, num_top):
        if not points:
            if dim % num_top:
                raise ValueError(self.error(f"needs the number of tops ({num_top}) to divide the slice axis "
                                            f"({dim}) evenly when no slice_point is given"))
            return [dim // num_top] * num_top
        if len(points) != num_top - 1:
            raise ValueError(self.error(f"has {len(points)} slice_point(s) for {num_top} tops "
                                        f"(needs one fewer than the tops)"))
        if num_top > dim:
            raise ValueError(self.error(f"has more tops ({num_top}) than the slice axis has entries ({dim})"))
        bounds = [0] + points + [dim]
        for a, b in zip(bounds[:-2], bounds[1:-1]):
            if b <= a:
                raise ValueError(self.error(f"needs increasing positive slice_points, got {points}"))
        if points[-1] > dim:
            raise ValueError(self.error(f"slice_point {points[-1]} is past the slice axis of size {dim}"))
        return [b - a for a, b in zip(bounds[:-1], bounds[1:])]

    def forward(self, bottom, top):
        x = bottom[0].data
        if len(top) == 1:
            top[0].share_data(bottom[0])
            return
        offset = 0
        for blob, size in zip(top, self.sizes):
            blob.data = x[_along(self.axis, offset, offset + size)]
            offset += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(top) == 1:
            bottom[0].diff = top[0].diff
            return
        xp = get_array_module(top[0].diff)
        bottom[0].diff = xp.concatenate([t.diff for t in top], axis=self.axis)


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
            y = xs[0] * self.coeffs[0] if self.coeffs[0] != 1 else xs[0].copy()
            for x, c in zip(xs[1:], self.coeffs[1:]):
                y += x * c if c != 1 else x
        elif self.op == EltwiseOp.PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y *= x
        else:
            y, self._argmax = self._max(xp, xs)
        top[0].data = y

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


# ---- Flatten / Reshape ----------------------------------------------------------
class _ViewLayer(Layer):
    """A top that is the bottom under another shape (Caffe's ShareData / ShareDiff)."""
    num_bottom = (1, 1)
    num_top = (1, 1)

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise ValueError(self.error("does not allow in-place computation"))

    def forward(self, bottom, top):
        top[0].share_data(bottom[0])   # a new shape over the same values, as Caffe's ShareData

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].share_diff(top[0])


@register("Flatten", v1="FLATTEN")
class FlattenLayer(_ViewLayer):
    """Merges axes `axis` .. `end_axis` (defaults 1 .. -1) into one:
    (N, C, H, W) -> (N, C*H*W) by default."""

    def reshape(self, bottom, top):
        p = self.layer_param.flatten_param
        shape = bottom[0].shape
        start = canonical_axis(self, p.axis, len(shape))
        end = canonical_axis(self, p.end_axis, len(shape), "end_axis")
        if end < start:
            raise ValueError(self.error(f"needs end_axis >= axis, got axis {start} and end_axis {end} "
                                        f"for shape {shape}"))
        top[0].reshape(shape[:start] + (count(shape, start, end + 1),) + shape[end + 1:])


@register("Reshape")
class ReshapeLayer(_ViewLayer):
    """Gives the bottom a new shape without copying.  `shape` replaces the bottom axes
    [axis, axis + num_axes) (defaults: all of them); in it 0 copies the bottom's dimension
    at that position and one -1 is inferred from the count.
    e.g. (2, 3, 4) with shape { dim: 0 dim: -1 } -> (2, 12).
    """

    def setup(self, bottom, top):
        super().setup(bottom, top)
        dims = [int(d) for d in self.layer_param.reshape_param.shape.dim]
        if dims.count(-1) > 1:
            raise ValueError(self.error(f"new shape {dims} contains multiple -1 dims; at most one may be given"))
        if any(d < -1 for d in dims):
            raise ValueError(self.error(f"new shape {dims} has a dimension below -1"))
        self.dims = dims

    def reshape(self, bottom, top):
        p = self.layer_param.reshape_param
        shape = bottom[0].shape
        n = len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise ValueError(self.error(f"axis {p.axis} is out of range for a {n}-D bottom"))
        if p.num_axes < -1:
            raise ValueError(self.error(f"num_axes must be >= 0, or -1 for all, got {p.num_axes}"))
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise ValueError(self.error(f"axis + num_axes = {end} is out of range for a {n}-D bottom"))
        new = list(self.dims)
        for i, d in enumerate(new):
            if d == 0:
                if start + i >= n:
                    raise ValueError(self.error(f"new shape contains a 0 at index {i}, but there was no "
                                                f"corresponding bottom axis to copy (bottom shape {shape})"))
                new[i] = shape[start + i]
        if -1 in new:
            known = count(shape, 0, start) * count(shape, end) * int(np.prod([d for d in new if d != -1]))
            if known == 0 or bottom[0].count % known:
                raise ValueError(self.error(f"bottom count ({bottom[0].count}) must be divisible by the product "
                                            f"of the specified dimensions ({known})"))
            new[new.index(-1)] = bottom[0].count // known
        top_shape = shape[:start] + tuple(new) + shape[end:]
        if count(top_shape) != bottom[0].count:
            raise ValueError(self.error(f"output count must match input count: bottom {shape}, top {top_shape}"))
        top[0].reshape(top_shape)


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
        if param_wanted(self, 0):
            scatter_add(get_array_module(g), self.blobs[0].diff, self._index, g)
        if self.bias_term and param_wanted(self, 1):
            self.blobs[1].diff += g.sum(axis=0)


# ---- Tile -----------------------------------------------------------------------
@register("Tile")
class TileLayer(Layer):
    """Repeats the block of axes from `axis` (default 1) `tiles` times along that axis:
    (N, C, H) with axis 1, tiles 2 -> (N, 2C, H), the whole C*H block copied twice.
    Backward sums the copies."""
    num_bottom = (1, 1)
    num_top = (1, 1)

    def setup(self, bottom, top):
        p = self.layer_param.tile_param
        if not p.HasField("tiles"):
            raise ValueError(self.error("needs tile_param { tiles }"))
        if p.tiles <= 0:
            raise ValueError(self.error(f"needs a positive number of tiles, got {p.tiles}"))
        self.tiles = int(p.tiles)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(self, self.layer_param.tile_param.axis, len(shape))
        self.outer, self.inner = count(shape, 0, self.axis), count(shape, self.axis)
        top[0].reshape(shape[:self.axis] + (shape[self.axis] * self.tiles,) + shape[self.axis + 1:])

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(self.outer, self.inner)
        top[0].data = xp.tile(x, (1, self.tiles)).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            bottom[0].diff = g.sum(axis=1).reshape(bottom[0].shape)


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


# ---- Filter / BatchReindex ------------------------------------------------------
@register("Filter")
class FilterLayer(Layer):
    """Keeps the items (along axis 0) whose selector value is non-zero.  Bottoms: the blobs
    to filter, then the selector (shape (N,) or (N, 1, ...)); one top per filtered blob, of
    shape (#selected, ...).  Backward puts the top diff back at the selected items, 0 elsewhere.
    As in Caffe, set-up shapes the tops with all N items; each forward shapes them to the selection.
    """
    num_bottom = (2, None)
    num_top = (1, None)

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise ValueError(self.error(f"needs one top per filtered bottom ({len(bottom) - 1}), got {len(top)}"))
        self.num_bottoms = len(bottom)
        self._first_reshape = True

    def allow_force_backward(self, bottom_index):
        return bottom_index != self.num_bottoms - 1

    def _select(self, bottom):
        selector = bottom[-1]
        if any(d != 1 for d in selector.shape[1:]):
            raise ValueError(self.error(f"needs a selector whose axes after the first are 1, "
                                        f"got shape {selector.shape}"))
        for i, blob in enumerate(bottom[:-1]):
            if blob.shape[:1] != selector.shape[:1]:
                raise ValueError(self.error(f"needs bottom[{i}] (shape {blob.shape}) to have the same first "
                                            f"dimension as the selector (shape {selector.shape})"))
        xp = get_array_module(selector.data)
        self._index = xp.flatnonzero(selector.data.reshape(-1))

    def _shape_tops(self, bottom, top, n):
        for blob, src in zip(top, bottom[:-1]):
            blob.reshape((n,) + src.shape[1:])

    def reshape(self, bottom, top):
        self._select(bottom)
        n = bottom[0].shape[0] if self._first_reshape else int(self._index.size)
        self._first_reshape = False
        self._shape_tops(bottom, top, n)

    def forward(self, bottom, top):
        self._select(bottom)
        self._shape_tops(bottom, top, int(self._index.size))
        for blob, src in zip(top, bottom[:-1]):
            blob.data = src.data[self._index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise ValueError(self.error("cannot backpropagate to the filter index input (the selector)"))
        for blob, src, down in zip(top, bottom[:-1], propagate_down):
            if down:
                xp = get_array_module(blob.diff)
                diff = xp.zeros(src.shape, src.dtype)
                diff[self._index] = blob.diff
                src.diff = diff


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """top[i] = bottom[0][index[i]] along axis 0, with bottom[1] the 1-D index blob (values in
    [0, N), repeats allowed).  Backward adds each top item's diff into the item it came from.
    """
    num_bottom = (2, 2)
    num_top = (1, 1)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if len(bottom[1].shape) != 1:
            raise ValueError(self.error(f"needs a 1-D index blob, got shape {bottom[1].shape}"))
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])

    def forward(self, bottom, top):
        values = bottom[1].data
        n = bottom[0].shape[0]
        if values.size and (float(values.min()) < 0 or float(values.max()) >= n):
            raise ValueError(self.error(f"needs indices in [0, {n}) (the batch size), got values from "
                                        f"{float(values.min())} to {float(values.max())}"))
        self._index = values.astype(np.int64)
        top[0].data = bottom[0].data[self._index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise ValueError(self.error("cannot backpropagate to the index input"))
        if propagate_down[0]:
            g = top[0].diff
            xp = get_array_module(g)
            diff = xp.zeros(bottom[0].shape, bottom[0].dtype)
            scatter_add(xp, diff, self._index, g)
            bottom[0].diff = diff


# ---- Parameter ------------------------------------------------------------------
@register("Parameter")
class ParameterLayer(Layer):
    """A learned blob as a layer output: top = blobs[0], of parameter_param's shape
    (initialised to zeros, as in Caffe).  Backward adds the top diff to the parameter's."""
    num_bottom = (0, 0)
    num_top = (1, 1)

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
        if param_wanted(self, 0):
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


@register("Bias")
class BiasLayer(Layer):
    """y = x + b, b broadcast along the axes [axis, axis + b.ndim) of x (default axis 1).
    b is bottom[1] if given, else the learned blobs[0] of bottom[0]'s axes
    [axis, axis + num_axes) (num_axes default 1, -1 = to the end, 0 = scalar), filler default 0.
    dL/dx = g;  dL/db = g summed over the other axes.
    """
    num_bottom = (1, 2)
    num_top = (1, 1)

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
            if param_wanted(self, 0):
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
        # kept for the scale gradient; in place the top overwrites x, so keep a copy
        self._x = x.copy() if top[0] is bottom[0] else x
        outer, dim, inner = self.dims
        y = x.reshape(outer, dim, inner) * self._scale(bottom).data.reshape(1, dim, 1)
        if self.bias_term:
            outer, dim, inner = self.bias_dims
            y = y.reshape(outer, dim, inner) + self.blobs[-1].data.reshape(1, dim, 1)
        top[0].data = y.reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff
        scale = self._scale(bottom)
        if self.bias_term and param_wanted(self, len(self.blobs) - 1):
            self.blobs[-1].diff += _per_channel_sum(g, *self.bias_dims, self.blobs[-1].shape)
        if len(bottom) == 1:
            if param_wanted(self, 0):
                scale.diff += _per_channel_sum(g * self._x, *self.dims, scale.shape)
        elif propagate_down[1]:
            scale.diff = _per_channel_sum(g * self._x, *self.dims, scale.shape)
        if propagate_down[0]:
            outer, dim, inner = self.dims
            bottom[0].diff = (g.reshape(outer, dim, inner) * scale.data.reshape(1, dim, 1)).reshape(g.shape)
