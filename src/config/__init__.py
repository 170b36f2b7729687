"""Run configuration: the YAML files in this folder and the loader that layers and validates them.

``load_config(config_name, env_config_name, overrides)`` returns a read-only :class:`Config`; see
:mod:`config.loader` for the layering order and the checks.
"""
from config.loader import Config, ConfigError, available_configs, load_config

__all__ = ["Config", "ConfigError", "available_configs", "load_config"]
