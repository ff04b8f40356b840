"""cwhost: one GPU server as a private cloud-workstation provider for its LAN."""

__version__ = "0.1.0"
