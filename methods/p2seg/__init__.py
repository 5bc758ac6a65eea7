"""P2Seg (Mutual Distillation Module, paper 000): S2I and I2S on top of BESTIE; see docs/p2seg.md."""
