"""vividhead: curate talking-head video into training shards, and train, stream and evaluate FlashHead."""

__version__ = "0.1.0"
