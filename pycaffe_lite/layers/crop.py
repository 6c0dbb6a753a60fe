"""Crop with BVLC Caffe's semantics."""
from ..backend import get_array_module
from ..layer import Layer, register


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
