"""Write a random tiny Toto-1.0-QA artifact to disk (model/tiny.py builds it in memory)."""

from __future__ import annotations

from model.tiny import build_tiny_model

__all__ = ["make_tiny_model"]


def make_tiny_model(out_dir: str, seed: int = 0) -> str:
    """Write a random tiny model in the exact artifact layout to ``out_dir``; returns ``out_dir``."""
    model = build_tiny_model(seed)
    model.save_pretrained(out_dir)
    return out_dir
