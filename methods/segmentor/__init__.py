"""Fully supervised instance segmentors fine-tuned on pseudo labels (Mask R-CNN, SOLOv2)."""
