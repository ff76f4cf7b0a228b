"""vividhead eval: the paper's metrics (Sync-C/D, FID, FVD, FPS) on generated videos."""
