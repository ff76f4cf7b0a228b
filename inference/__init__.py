"""Streaming inference: engine, audio context cache, sampler, sinks and the local server."""
