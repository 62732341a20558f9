"""Spillgate: a local-first OpenAI-compatible inference node that spills to paid APIs
only when it must."""

__version__ = "0.1.0"
