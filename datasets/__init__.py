"""WSIS-Bench datasets: loaders for VOC/SBD/COCO, the canonical form, the synthetic generator, point sampling."""
