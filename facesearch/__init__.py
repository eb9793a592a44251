"""FaceSearch command line."""
