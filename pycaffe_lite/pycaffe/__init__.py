"""pycaffe's Python surface over the Net: the modules BVLC's python/caffe/ has beside the C++
bindings, re-exported by the package face under pycaffe's names (`caffe.io`, `caffe.draw`,
`caffe.classifier`, `caffe.detector`, `caffe.net_spec`, `caffe.coord_map`, `caffe.layers` /
`caffe.params`, `caffe.Classifier`, `caffe.Detector`, `caffe.alias_as_caffe`).

- `io`: BlobProto / Datum <-> arrays, the input Transformer, image loading and resizing.
- `classifier`, `detector`: Classifier and Detector nets.
- `net_spec`: NetSpec with the `layers` (L) and `params` (P) pseudo-modules; `coord_map`: crop offsets.
- `draw`: a NetParameter as a Graphviz graph.
- `alias`: `import caffe` gives pycaffe_lite (for code written for pycaffe).
"""
