"""Atelier: a self-hosted Discord bot for Midjourney-style image generation."""

__version__ = "0.1.0"
