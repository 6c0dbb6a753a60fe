"""One interface over the convolution engines.

Every engine is an `Engine` with the same five methods, all on NCHW arrays
with Caffe's weight layout (K, C/group, kh, kw):

    supports(geom)                                  can it run this layer?
    forward(x, w, b, geom, out=None, ctx=None)      -> y
    backward(x, w, dy, geom, need_dx, need_dw,
             dx_out=None, ctx=None)                 -> (dx or None, dw or None)
    backward_data(dy, w, geom, x_shape, out=None)   -> dx   (a Deconvolution's forward)
    backward_weights(x, dy, geom, w_shape)          -> dw   (a Deconvolution's dw)

`ctx` is an optional dict a layer keeps per bottom; an engine's backward reuses
what its forward kept there (im2col's columns, FFT spectra, Winograd tiles).  The bias
gradient, dy.sum((0, 2, 3)), is the caller's.
"""
from . import fft, im2col, winograd


class Engine:
    def __init__(self, name, module, describe, **options):
        self.name = name
        self.module = module
        self.describe = describe
        self.options = options

    def supports(self, geom):
        return self.module.supports(geom)

    def forward(self, x, w, b, geom, out=None, ctx=None):
        return self.module.forward(x, w, b, geom, out=out, ctx=ctx, **self.options)

    def backward(self, x, w, dy, geom, need_dx=True, need_dw=True, dx_out=None, ctx=None):
        return self.module.backward(x, w, dy, geom, need_dx=need_dx, need_dw=need_dw,
                                    dx_out=dx_out, ctx=ctx, **self.options)

    def backward_data(self, dy, w, geom, x_shape, out=None):
        return self.module.backward_data(dy, w, geom, x_shape, out=out, **self.options)

    def backward_weights(self, x, dy, geom, w_shape):
        return self.module.backward_weights(x, dy, geom, w_shape, **self.options)

    def __repr__(self):
        return f"<conv engine {self.name}>"


ENGINES = {
    "im2col": Engine("im2col", im2col, "im2col + GEMM (Caffe's algorithm; any geometry)"),
    "fft": Engine("fft", fft, "real FFTs, tiled (stride 1)"),
    "winograd": Engine("winograd", winograd, "Winograd F(2x2,3x3) (3x3, stride 1, dilation 1)", m=2),
    "winograd4": Engine("winograd4", winograd, "Winograd F(4x4,3x3) (3x3, stride 1, dilation 1)", m=4),
}


def get_engine(name):
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown convolution engine '{name}'; known: "
                         + ", ".join(sorted(ENGINES))) from None
