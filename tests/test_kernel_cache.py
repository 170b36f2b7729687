"""The simulator's compiled kernels are re-used from disk only while none of its source files changed."""
from envs.sim import engine, kernel_cache


def test_fingerprint_covers_every_source_file_of_the_package(tmp_path):
    for name in ("engine.py", "features.py", "units.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    before = kernel_cache.source_fingerprint(str(tmp_path))
    (tmp_path / "units.py").write_text("# units.py\nSHIELD_REGEN_PER_LOOP = 0.1\n")  # a constant the kernels inline
    changed = kernel_cache.source_fingerprint(str(tmp_path))
    (tmp_path / "notes.txt").write_text("not python")
    assert changed != before and kernel_cache.source_fingerprint(str(tmp_path)) == changed


def test_simulator_kernels_are_stamped_with_the_package_fingerprint():
    locator = engine.step_envs_serial._cache._impl._locator
    assert isinstance(locator, kernel_cache._PackageStampMixin)
    assert locator.get_source_stamp()[1] == kernel_cache.FINGERPRINT == kernel_cache.source_fingerprint()
