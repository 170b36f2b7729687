"""Numba's on-disk kernel cache, invalidated by any change to the simulator's source files.

Numba keys a cached kernel on the source file that defines it. The step kernels in ``engine.py`` compile
``features.py``'s reward and observation code and ``units.py``'s constants into themselves, so with
Numba's own rule an edit to those files is silently ignored until ``engine.py`` changes or the cache is
deleted (Numba's limitation: its cache does not follow imports). Here every kernel defined in this
package is stamped with a fingerprint of *all* the package's ``.py`` files as well: any edit recompiles.

:func:`install` puts these locators in front of Numba's own (through ``NUMBA_CACHE_LOCATOR_CLASSES``,
which Numba reads when a cached function is defined); it must run before the kernels are imported.
Functions outside this package keep Numba's default locators.
"""
from __future__ import annotations

import hashlib
import os

import numba
from numba.core import caching

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def source_fingerprint(directory: str = PACKAGE_DIR) -> str:
    """SHA-256 over the names and bytes of every ``.py`` file directly in ``directory``."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            digest.update(name.encode())
            with open(os.path.join(directory, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


FINGERPRINT = source_fingerprint()


class _PackageStampMixin:
    """A locator for this package's functions whose source stamp includes :data:`FINGERPRINT`."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != PACKAGE_DIR:
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return (super().get_source_stamp(), FINGERPRINT)


class SimUserProvidedCacheLocator(_PackageStampMixin, caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR``, when set."""


class SimInTreeCacheLocator(_PackageStampMixin, caching.InTreeCacheLocator):
    """``__pycache__`` next to the sources."""


class SimUserWideCacheLocator(_PackageStampMixin, caching.UserWideCacheLocator):
    """The user-wide cache directory, when the source tree is read-only."""


NUMBA_DEFAULT_LOCATORS = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator",
                          "IPythonCacheLocator", "ZipCacheLocator")


def install() -> None:
    """Make Numba look up this package's kernels with the locators above (before its defaults, or before
    the locators a user configured with ``NUMBA_CACHE_LOCATOR_CLASSES``)."""
    ours = [f"{__name__}.{cls.__name__}" for cls in
            (SimUserProvidedCacheLocator, SimInTreeCacheLocator, SimUserWideCacheLocator)]
    configured = getattr(numba.config, "CACHE_LOCATOR_CLASSES", None)
    if configured is None or ours[0] in str(configured):
        return  # a Numba without configurable locators, or already installed
    rest = [c.strip() for c in str(configured).split(",") if c.strip()] or list(NUMBA_DEFAULT_LOCATORS)
    numba.config.CACHE_LOCATOR_CLASSES = ",".join(ours + rest)
