"""Training, evaluation and export of the seed's U-Net. The only package that imports TensorFlow."""
