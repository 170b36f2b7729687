"""Multi-agent controllers: ``REGISTRY[name](env_info, cfg, device)``."""
from .basic_controller import BasicMAC

REGISTRY = {
    "basic_mac": BasicMAC,
}
