"""FlashHead training: shard dataset, stage-1 flow matching, stage-2 DMD distillation."""
