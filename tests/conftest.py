"""Test session set-up: an 8-device CPU platform for the sharding tests."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_collection_modifyitems(items):
  """The slow end-to-end tests first: the two xdist workers then finish close together
  (longest first), instead of one starting a minutes-long test near the end."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
