"""The MongoDB observer (Sacred's ``-m``): its spec parsed, and its server checked to answer before a run starts."""
from __future__ import annotations

import re
from typing import Any

from config.loader import ConfigError

MONGO_TIMEOUT_S = 3.0


def parse_mongo_spec(spec: str) -> dict[str, Any]:
    """Sacred's ``-m`` value (``db_name``, ``host:port`` or ``host:port:db_name``, optionally
    ``.collection`` and ``!priority``) as MongoObserver arguments; a clear error for anything else."""
    from sacred.observers.mongo import get_pattern, parse_mongo_db_arg

    if not isinstance(spec, str) or re.match(get_pattern(), spec) is None:
        raise ConfigError(f"-m {spec!r} is not a MongoDB observer spec: expected db_name, host:port or "
                          "host:port:db_name (optionally followed by .collection and !priority), e.g. "
                          "-m localhost:27017:dm2.")
    return parse_mongo_db_arg(spec)


def check_mongo(spec: str, timeout_s: float = MONGO_TIMEOUT_S) -> dict[str, Any]:
    """Raise :class:`ConfigError` unless pymongo is installed and a MongoDB server answers at ``spec``'s
    address within ``timeout_s`` seconds (Sacred's own observer would otherwise hang for about a minute at
    the run's start and then fail with tracebacks). Returns the parsed spec."""
    kwargs = parse_mongo_spec(spec)
    url = kwargs.get("url", "localhost:27017")
    try:
        import pymongo
        import pymongo.errors
    except ImportError:
        raise ConfigError(f"-m {spec} records the run in MongoDB, which needs pymongo: pip install -r "
                          "requirements.txt (or pip install pymongo).") from None
    timeout_ms = int(timeout_s * 1000)
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:
        reason = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]
        raise ConfigError(f"-m {spec}: no MongoDB server answered at {url} within {timeout_s:g} s ({reason}). Check "
                          f"the host and port, that mongod is running there and accepts connections from this "
                          f"machine (e.g. `mongosh --host {url}`), or leave -m out to record the run in files "
                          "only.") from None
    finally:
        client.close()
    return kwargs
