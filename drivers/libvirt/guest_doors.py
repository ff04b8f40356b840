"""The ways into a running libvirt domain's guest: its address on cwhost's network, cwhost's guest
service there, QEMU's guest agent (readiness, commands), and QEMU's display (screenshots, input)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import libvirt

from drivers.base import ExecRequest, ExecResult, InvalidDomainState, ReadinessReport
from drivers.guest_service.client import GuestService, GuestServiceUnavailable
from drivers.guest_service.server import SERVICE_PORT
from drivers.input_events import InputAction
from drivers.libvirt.connection import LibvirtConnection
from drivers.libvirt.domain_xml import DomainXml, from_xml
from drivers.libvirt.guest_agent import readiness_report, run_command, screen_picture, screenshot_png, send_input
from drivers.libvirt.network import GuestNetwork, leased_address
from drivers.libvirt.reported_xml import network_mac

# The guest service answers on the guest's private network, at once or not at all.
SERVICE_CONNECT_SECONDS = 5.0


class GuestDoors:
    """The driver's part that reaches inside running guests (mixed into LibvirtDriver)."""

    _libvirt: LibvirtConnection
    _own_network: GuestNetwork | None
    _domain: Callable[[str], libvirt.virDomain]

    def guest_endpoint(self, name: str, guest_port: int) -> tuple[str, int] | None:
        if self._own_network is None:
            return None
        domain = self._domain(name)
        with self._libvirt.translated(name):
            if not domain.isActive():
                return None
            address = leased_address(self._libvirt.get(), self._own_network, network_mac(domain.XMLDesc(0)))
        return (address, guest_port) if address else None

    def guest_service(self, name: str, user: str) -> GuestService:
        if self._live(name) is None:
            raise InvalidDomainState(f"domain {name} is not running")

        def connect() -> socket.socket:
            # Asked at each connection: the guest's address may come (DHCP) after the service is made.
            endpoint = self.guest_endpoint(name, SERVICE_PORT)
            if endpoint is None:
                raise GuestServiceUnavailable("the guest has no address on cwhost's network (yet)")
            return socket.create_connection(endpoint, timeout=SERVICE_CONNECT_SECONDS)

        return GuestService(connect, user)

    def _live(self, name: str) -> DomainXml | None:
        """The running domain's definition; None when it is stopped."""
        domain = self._domain(name)
        with self._libvirt.translated(name):
            return from_xml(domain.XMLDesc(0)) if domain.isActive() else None

    def _running(self, name: str) -> libvirt.virDomain:
        domain = self._domain(name)
        if not domain.isActive():
            raise InvalidDomainState(f"domain {name} is not running")
        return domain

    def readiness(self, name: str) -> ReadinessReport | None:
        with self._libvirt.translated(name):
            domain = self._domain(name)
            return readiness_report(domain) if domain.isActive() else None

    def exec(self, name: str, request: ExecRequest) -> ExecResult:
        with self._libvirt.translated(name):
            return run_command(self._running(name), request)

    def send_input(self, name: str, actions: tuple[InputAction, ...]) -> None:
        with self._libvirt.translated(name):
            send_input(self._libvirt.get(), self._running(name), actions)

    def screenshot(self, name: str) -> bytes:
        with self._libvirt.translated(name):
            return screenshot_png(self._libvirt.get(), self._running(name))

    def screen_frame(self, name: str) -> bytes:
        with self._libvirt.translated(name):
            return screen_picture(self._libvirt.get(), self._running(name))
