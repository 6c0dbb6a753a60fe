"""Crop with BVLC Caffe's semantics."""
import numpy as np

from ..backend import get_array_module
from ..geometry import FieldStep
from ..layer import Layer, onnx_export, register


# ---------------------------------------------------------------------------
# Crop
# ---------------------------------------------------------------------------
@register("Crop")
class CropLayer(Layer):
    """Crop bottom[0] to the shape of bottom[1] on the axes from `axis` on.

    top = bottom[0][..., o_a : o_a + S_a, ...] for each cropped axis a, with
    S_a = bottom[1].shape[a] and offsets o: none (all 0), one for all cropped
    axes, or one per cropped axis.  Axes before `axis` keep bottom[0]'s size.
    """
    num_bottom = (2, 2)
    num_top = (1, 1)
    field = FieldStep("same", bottoms=1)     # the reference bottom only gives the size

    def setup(self, bottom, top):
        p = self.layer_param.crop_param
        n = len(bottom[0].shape)
        try:
            self.axis = bottom[0].canonical_axis(p.axis)
        except ValueError:
            raise ValueError(self.error(f"crop axis {p.axis} is out of range for a "
                                        f"{n}-axis input of shape {bottom[0].shape}")) from None
        self.offsets_param = list(p.offset)
        if len(self.offsets_param) > 1 and self.axis + len(self.offsets_param) != n:
            raise ValueError(self.error(
                f"needs one offset or one per cropped axis ({n - self.axis} for axis {self.axis} of a "
                f"{n}-axis input), got {len(self.offsets_param)}"))

    def reshape(self, bottom, top):
        src, ref = bottom[0].shape, bottom[1].shape
        if len(src) != len(ref):
            raise ValueError(self.error(f"needs bottoms with the same number of axes, got shapes {src} and {ref}"))
        shape, self.slices = [], []
        for i, size in enumerate(src):
            offset, new = 0, size
            if i >= self.axis:
                new = ref[i]
                if len(self.offsets_param) == 1:
                    offset = self.offsets_param[0]
                elif self.offsets_param:
                    offset = self.offsets_param[i - self.axis]
                if size - offset < new:
                    raise ValueError(self.error(f"crop of axis {i} is out of bounds: size {new} at offset "
                                                f"{offset} in an axis of size {size} (shapes {src}, {ref})"))
            shape.append(new)
            self.slices.append(slice(offset, offset + new))
        self.slices = tuple(self.slices)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data = bottom[0].data[self.slices]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            xp = get_array_module(top[0].diff)
            grad = xp.zeros(bottom[0].shape, dtype=bottom[0].dtype)
            grad[self.slices] = top[0].diff
            bottom[0].diff = grad
        if propagate_down[1]:
            bottom[1].diff = get_array_module(bottom[1].data).zeros(bottom[1].shape, bottom[1].dtype)


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("Crop")
def _crop_to_onnx(g, layer, bottoms, tops):
    q, name = layer.layer_param.crop_param, layer.name
    in_shape, ref_shape = g.shape(bottoms[0]), g.shape(bottoms[1])
    axis = q.axis if q.axis >= 0 else len(in_shape) + q.axis
    offsets = list(q.offset)
    starts, ends, axes = [], [], []
    for i, a in enumerate(range(axis, len(in_shape))):
        off = offsets[0] if len(offsets) == 1 else (offsets[i] if offsets else 0)
        starts.append(off)
        ends.append(off + ref_shape[a])
        axes.append(a)
    g.node("Slice", [bottoms[0], g.const(f"{name}/starts", np.array(starts, np.int64)),
                     g.const(f"{name}/ends", np.array(ends, np.int64)),
                     g.const(f"{name}/axes", np.array(axes, np.int64))], tops[:1], name=name)
