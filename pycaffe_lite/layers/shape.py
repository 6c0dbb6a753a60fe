"""Layers that join, split, reshape, tile and select blobs: Concat, Slice, Flatten,
Reshape, Tile, Filter and BatchReindex, with Caffe's axis rules.

    layer { name: "flat" type: "Flatten" bottom: "pool5" top: "flat" }

Layers that share memory in Caffe (Flatten, Reshape, a one-way Concat or
Slice) hand the top a view of the bottom's array in `forward` and give the
bottom a view of the top's diff in `backward`.
"""
import numpy as np

from ..backend import get_array_module
from ..geometry import SAME
from ..layer import Layer, onnx_export, register
from .common import canonical_axis, count, scatter_add


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
    field = SAME

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
    field = SAME

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


# ---- Flatten / Reshape ----------------------------------------------------------
class _ViewLayer(Layer):
    """A top that is the bottom under another shape (Caffe's ShareData / ShareDiff)."""
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

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


# ---- Tile -----------------------------------------------------------------------
@register("Tile")
class TileLayer(Layer):
    """Repeats the block of axes from `axis` (default 1) `tiles` times along that axis:
    (N, C, H) with axis 1, tiles 2 -> (N, 2C, H), the whole C*H block copied twice.
    Backward sums the copies."""
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

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
    field = SAME

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
    field = SAME

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


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("Concat")
def _concat_to_onnx(g, layer, bottoms, tops):
    q = layer.layer_param.concat_param
    axis = q.axis if q.HasField("axis") or not q.HasField("concat_dim") else q.concat_dim
    g.node("Concat", bottoms, tops, name=layer.name, axis=int(axis))


@onnx_export("Flatten")
def _flatten_to_onnx(g, layer, bottoms, tops):
    q = layer.layer_param.flatten_param
    rank = len(g.shape(bottoms[0]))
    end = q.end_axis if q.end_axis >= 0 else rank + q.end_axis
    if end == rank - 1:
        g.node("Flatten", bottoms, tops, name=layer.name, axis=int(q.axis))
    else:
        g.reshape(layer.name, bottoms[0], tops[0], g.shape(tops[0]))


@onnx_export("Reshape")
def _reshape_to_onnx(g, layer, bottoms, tops):
    g.reshape(layer.name, bottoms[0], tops[0], g.shape(tops[0]))


@onnx_export("Slice")
def _slice_to_onnx(g, layer, bottoms, tops):
    q = layer.layer_param.slice_param
    axis = q.axis if q.HasField("axis") or not q.HasField("slice_dim") else q.slice_dim
    sizes = [g.shape(t)[axis] for t in tops]
    g.node("Split", [bottoms[0], g.const(f"{layer.name}/split", np.array(sizes, np.int64))], tops,
           name=layer.name, axis=int(axis))
