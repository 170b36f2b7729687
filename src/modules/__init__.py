"""Torch modules only: agents (policies / Q-networks), critics, mixers, discriminators, stacked layers."""


def lookup(registry: dict, name: str, kind: str):
    """``registry[name]``, or a ``ValueError`` naming the bad ``kind`` and the valid choices."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; valid choices: {', '.join(sorted(registry))}") from None
