"""Discriminator networks (DM²'s per-agent observation discriminators are added here)."""
REGISTRY: dict = {}
