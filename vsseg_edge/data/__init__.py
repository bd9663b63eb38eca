"""Datasets: the synthetic street-scene generator, Cityscapes and CamVid readers, paired transforms, optical flow."""
