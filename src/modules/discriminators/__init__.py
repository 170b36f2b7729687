"""Discriminator networks: ``REGISTRY[name](n_stacks, input_dim, cfg)`` (DM²'s per-agent discriminators)."""
from .mlp_discriminator import MLPDiscriminator

REGISTRY = {
    "mlp": MLPDiscriminator,
}
