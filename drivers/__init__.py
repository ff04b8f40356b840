"""Hypervisor drivers. Nothing here imports cwhost: drivers know nothing of the service."""
