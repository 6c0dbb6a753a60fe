"""Classifier: a Net for image classification with scaling, center cropping or
oversampling (pycaffe's caffe.Classifier).

    net = caffe.Classifier("deploy.prototxt", "weights.caffemodel", image_dims=(256, 256),
                           mean=np.array([104, 117, 123]), raw_scale=255, channel_swap=(2, 1, 0))
    probs = net.predict([caffe.io.load_image("cat.jpg")])   # (N, classes), averaged over 10 crops
"""
import numpy as np

from . import io as caffe_io
from ..net import TEST, Net


def input_transformer(net, mean, input_scale, raw_scale, channel_swap):
    """pycaffe's Transformer for the net's first input: HxWxK images to KxHxW, then the options."""
    in_ = net.inputs[0]
    transformer = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    for value, setter in ((mean, transformer.set_mean), (input_scale, transformer.set_input_scale),
                          (raw_scale, transformer.set_raw_scale), (channel_swap, transformer.set_channel_swap)):
        if value is not None:
            setter(in_, value)
    return transformer


class Classifier(Net):
    """A TEST-phase Net whose first input takes (H x W x K) images through a Transformer."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, **net_kwargs):
        super().__init__(model_file, pretrained_file, TEST, **net_kwargs)
        in_ = self.inputs[0]
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = np.array(image_dims)

    def predict(self, inputs, oversample=True):
        """Class probabilities (N x C) of N (H x W x K) images.

        oversample: average over the center, corner and mirrored crops (default),
        else classify the center crop only.
        """
        if len(inputs) == 0:
            raise ValueError("predict needs at least one image")
        input_ = np.zeros((len(inputs), int(self.image_dims[0]), int(self.image_dims[1]), inputs[0].shape[2]),
                          dtype=np.float32)
        for ix, in_ in enumerate(inputs):
            input_[ix] = caffe_io.resize_image(in_, self.image_dims)
        if oversample:
            input_ = caffe_io.oversample(input_, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = np.tile(center, (1, 2))[0] + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])
            crop = crop.astype(int)
            input_ = input_[:, crop[0]:crop[2], crop[1]:crop[3], :]
        caffe_in = np.zeros(np.array(input_.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for ix, in_ in enumerate(input_):
            caffe_in[ix] = self.transformer.preprocess(self.inputs[0], in_)
        out = self.forward_all(**{self.inputs[0]: caffe_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
