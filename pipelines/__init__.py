"""Curation stages and the Ray pipeline that chains them (vividhead build)."""
