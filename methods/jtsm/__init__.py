"""JTSM (paper 003): MoIPool, the thing-and-stuff mining heads, GrabCut pseudo masks, panoptic merge (docs/jtsm.md)."""
