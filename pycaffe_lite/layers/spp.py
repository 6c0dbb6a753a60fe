"""SPP (spatial pyramid pooling) with BVLC Caffe's semantics, through the pooling array functions."""
from ..backend import get_array_module
from ..geometry import WHOLE
from ..layer import Layer, register
from ..proto import caffe_pb2
from .pooling import (PP, _needs_4d, ave_pool_backward, ave_pool_forward, max_pool_backward_fast,
                      max_pool_forward_fast, pooled_size, sto_pool_backward_test, sto_pool_forward_test,
                      sto_pool_forward_train)


# ---------------------------------------------------------------------------
# SPP
# ---------------------------------------------------------------------------
def spp_level_geometry(level, H, W):
    """Caffe's SPP pooling for pyramid level i: 2^i bins, kernel = stride = ceil(H / bins),
    pad = (kernel * bins - H + 1) // 2 (and the same for W)."""
    bins = 2 ** level
    kh, kw = -(-H // bins), -(-W // bins)
    ph, pw = (kh * bins - H + 1) // 2, (kw * bins - W + 1) // 2
    return (kh, kw), (kh, kw), (ph, pw)


@register("SPP")
class SPPLayer(Layer):
    """Spatial pyramid pooling: levels 0..pyramid_height-1 pool into 2^i x 2^i bins.

    pyramid_height 1: top is the level-0 pooling, (N, C, 1, 1).
    Otherwise each level is flattened to (N, C * Ho_i * Wo_i) and the levels
    are concatenated along axis 1.
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = WHOLE

    def setup(self, bottom, top):
        p = self.layer_param.spp_param
        self.height = p.pyramid_height
        self.pool = p.pool   # SPPParameter.PoolMethod has PoolingParameter's numbers
        if self.height < 1:
            raise ValueError(self.error(f"needs pyramid_height >= 1, got {self.height}"))

    def reshape(self, bottom, top):
        _needs_4d(self, bottom[0])
        N, C, H, W = bottom[0].shape
        if H <= 0 or W <= 0:
            raise ValueError(self.error(f"needs a non-empty input, got shape {bottom[0].shape}"))
        self.levels = []
        for level in range(self.height):
            kernel, stride, pad = spp_level_geometry(level, H, W)
            if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
                raise ValueError(self.error(f"level {level} needs pad < kernel, got pad {pad} and "
                                            f"kernel {kernel} for a {H} x {W} input (too many levels)"))
            if pad != (0, 0) and self.pool == PP.STOCHASTIC:
                raise ValueError(self.error(f"level {level} needs padding, which STOCHASTIC pooling lacks"))
            any_pad = bool(pad[0] or pad[1])
            out = (pooled_size(H, kernel[0], stride[0], pad[0], PP.CEIL, any_pad),
                   pooled_size(W, kernel[1], stride[1], pad[1], PP.CEIL, any_pad))
            self.levels.append(((kernel, stride, pad), out))
        self.in_size = (H, W)
        if self.height == 1:
            top[0].reshape(N, C, *self.levels[0][1])
        else:
            top[0].reshape(N, sum(C * ho * wo for _, (ho, wo) in self.levels))

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        outs, self.argks = [], []
        for geometry, out_size in self.levels:
            if self.pool == PP.MAX:
                out, argk = max_pool_forward_fast(x, *geometry, out_size)
            elif self.pool == PP.AVE:
                out, argk = ave_pool_forward(x, *geometry, out_size), None
            elif self.phase == caffe_pb2.TRAIN:
                out, argk = sto_pool_forward_train(x, geometry[0], geometry[1], out_size)
            else:
                out, argk = sto_pool_forward_test(x, geometry[0], geometry[1], out_size), None
            outs.append(out)
            self.argks.append(argk)
        if self.height == 1:
            top[0].data = outs[0]
        else:
            top[0].data = xp.concatenate([o.reshape(o.shape[0], -1) for o in outs], axis=1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        N, C = bottom[0].shape[:2]
        grad, offset = None, 0
        for (geometry, out_size), argk in zip(self.levels, self.argks):
            width = C * out_size[0] * out_size[1]
            part = dy.reshape(N, -1)[:, offset:offset + width].reshape(N, C, *out_size)
            offset += width
            if self.pool == PP.MAX or (self.pool == PP.STOCHASTIC and self.phase == caffe_pb2.TRAIN):
                g = max_pool_backward_fast(part, argk, *geometry, self.in_size)
            elif self.pool == PP.AVE:
                g = ave_pool_backward(part, *geometry, self.in_size)
            else:
                g = sto_pool_backward_test(part, bottom[0].data, geometry[0], geometry[1], self.in_size)
            grad = g if grad is None else grad + g
        bottom[0].diff = grad
