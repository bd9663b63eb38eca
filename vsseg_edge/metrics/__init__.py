"""Confusion-matrix mIoU and temporal consistency (TC). numpy-only."""
