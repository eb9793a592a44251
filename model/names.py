"""Names a checkpoint's config may hold, in a module without torch so that command lines can offer them."""

# the encoder networks model/encoder.py builds
ARCHS = ("mobilenet_v2", "dlib_resnet_v1")
# how the encoder's chip is cut from a photo (model/faces.py's Aligner)
CHIPS = ("template", "dlib5")
