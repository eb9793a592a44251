"""Names a checkpoint's config may hold, in a module without torch so that command lines can offer them."""

# the encoder networks model/encoder.py builds
ARCHS = ("edgeface_xs", "dlib_resnet_v1", "mobilenet_v2")
# how the encoder's chip is cut from a photo (model/faces.py's Aligner)
CHIPS = ("template", "dlib5")
# the face detectors model/faces.py runs (an encoder's config names the one it was trained and evaluated with)
DETECTORS = ("yunet", "mtcnn")
