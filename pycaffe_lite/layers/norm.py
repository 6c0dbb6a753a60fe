"""Normalization layers: BatchNorm, stored exactly as BVLC Caffe stores it.

    layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
    layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }

Caffe's BatchNorm only normalizes; the learned affine part is a Scale layer.
(MVN, the other normalization, lives with the common layers.)
"""
import numpy as np

from ..backend import get_array_module
from ..geometry import SAME
from ..kernels import elementwise
from ..layer import Layer, onnx_export, register
from ..proto import caffe_pb2


@register("BatchNorm")
class BatchNormLayer(Layer):
    """Normalizes each channel (axis 1; a 1-D bottom is one channel) over the batch and
    the spatial axes:  y = (x - mean) / sqrt(var + eps).

    blobs (not learned; Caffe forces lr_mult 0 on them):
      blobs[0] (C,)  running sum of the batch means
      blobs[1] (C,)  running sum of the unbiased batch variances
      blobs[2] (1,)  the running normalizer s
    In training (use_global_stats false, the default at TRAIN), with f the
    moving_average_fraction (0.999) and m = count / C values per channel:
      mean, var = batch mean and biased batch variance
      s = f * s + 1;  blobs[0] = f * blobs[0] + mean;  blobs[1] = f * blobs[1] + m/(m-1) * var
    With use_global_stats (the default at TEST): mean = blobs[0] / s, var = blobs[1] / s
    (both 0 when s == 0).
    Backward, batch statistics:  (g - mean(g) - y * mean(g * y)) / sqrt(var + eps);
    global statistics:  g / sqrt(var + eps).
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        channels = cls._channels(tuple(bottom_shapes[0])) if bottom_shapes else None
        return [(channels,), (channels,), (1,)]

    def setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        if p.HasField("use_global_stats"):
            self.use_global_stats = p.use_global_stats
        else:
            self.use_global_stats = self.phase == caffe_pb2.TEST
        self.channels = self._channels(bottom[0].shape)
        if not self.blobs:
            for shape in self.param_shapes(self.layer_param, [bottom[0].shape]):
                self.blobs.append(self.make_blob(shape, bottom[0].dtype, like=bottom[0]))
        self._fix_statistics()

    def _fix_statistics(self):
        """Caffe's rule: the statistics are never learned.  Each blob without a ParamSpec
        gets one with lr_mult 0 (so the Net and solver leave it alone); a given lr_mult
        other than 0 is an error."""
        specs = self.layer_param.param
        for i in range(len(self.blobs)):
            if len(specs) == i:
                specs.add().lr_mult = 0.0
            elif specs[i].lr_mult != 0:
                raise ValueError(self.error(f"cannot configure batch normalization statistics as layer "
                                            f"parameters: param {i} has lr_mult {specs[i].lr_mult}, needs 0"))

    @staticmethod
    def _channels(shape):
        return 1 if len(shape) == 1 else shape[1]

    def reshape(self, bottom, top):
        if self._channels(bottom[0].shape) != self.channels:
            raise ValueError(self.error(f"was set up for {self.channels} channels, bottom now has shape "
                                        f"{bottom[0].shape}"))
        top[0].reshape(bottom[0].shape)

    def _per_channel(self, a):
        """View a as (N, C, spatial)."""
        return a.reshape(a.shape[0], self.channels, -1)

    def _stored_statistics(self, xp):
        """mean, var from the running sums: blobs[0] / s, blobs[1] / s (0 if s == 0)."""
        s = self.blobs[2].data.reshape(())
        factor = xp.where(s == 0, 0, 1 / xp.where(s == 0, 1, s)).astype(s.dtype)
        return self.blobs[0].data * factor, self.blobs[1].data * factor

    def _update_statistics(self, mean, var, m):
        f = self.moving_average_fraction
        mean_sum, var_sum, s = (b.data for b in self.blobs)
        s *= f
        s += 1
        mean_sum *= f
        mean_sum += mean
        var_sum *= f
        var_sum += (m / (m - 1) if m > 1 else 1.0) * var

    def forward(self, bottom, top):
        x = self._per_channel(bottom[0].data)
        xp = get_array_module(x)
        if self.use_global_stats:
            # (x - mean) / std straight into the top (in place is fine: backward needs only std)
            mean, var = self._stored_statistics(xp)
            self._std = xp.sqrt(var + self.eps)[:, None]
            self._x_norm = None
            elementwise.channel_normalize(x, mean, self._std.reshape(-1), self._per_channel(top[0].data))
            return
        mean = x.mean(axis=(0, 2))
        centered = x - mean[:, None]
        var = (centered * centered).mean(axis=(0, 2))
        self._update_statistics(mean, var, bottom[0].count // self.channels)
        self._std = xp.sqrt(var + self.eps)[:, None]
        # Kept for backward in its own copy, as Caffe's x_norm_: a later in-place layer may
        # write into top's array.
        self._x_norm = centered / self._std
        top[0].data = self._x_norm.reshape(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self._per_channel(top[0].diff)
        if self.use_global_stats:
            d = g / self._std
        else:
            y = self._x_norm
            d = (g - g.mean(axis=(0, 2), keepdims=True)
                 - y * (g * y).mean(axis=(0, 2), keepdims=True)) / self._std
        bottom[0].diff = d.reshape(bottom[0].shape)


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("BatchNorm")
def _batch_norm_to_onnx(g, layer, bottoms, tops):
    p, name = layer.layer_param.batch_norm_param, layer.name
    mean, var, factor = g.params(layer)
    s = 0.0 if factor.reshape(-1)[0] == 0 else 1.0 / factor.reshape(-1)[0]
    if layer.phase == 0 and not (p.HasField("use_global_stats") and p.use_global_stats):
        raise ValueError(f"layer '{name}': a BatchNorm using batch statistics (TRAIN phase) "
                         "cannot be exported; build the net in the TEST phase")
    channels = mean.size
    g.node("BatchNormalization",
           [bottoms[0], g.const(f"{name}/scale", np.ones(channels, np.float32)),
            g.const(f"{name}/bias", np.zeros(channels, np.float32)),
            g.const(f"{name}/mean", (mean * s).astype(np.float32)),
            g.const(f"{name}/var", (var * s).astype(np.float32))],
           tops, name=name, epsilon=float(p.eps))
