"""Network wrappers: face, pose, SyncNet, VAD, audio features, attributes, FlashHead DiT and VAEs."""
