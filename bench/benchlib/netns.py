"""Two network namespaces joined by a veth pair, for builds where the daemon and its client are different
machines as far as the network goes (scenario 08-remote). Traffic stays inside the pair and each namespace's
loopback; nothing is routed to or from the host's network."""

from __future__ import annotations

import json
import subprocess

from .util import BenchError, log, run


class NetPair:
    """The daemon's namespace (its veth at `daemon_ip`) and the client's (at `client_ip`), /24 between them.
    Use as a context manager: the namespaces (and with them the veth pair) are removed on exit, errors too."""

    def __init__(self, tag: str = "rbbench", subnet: str = "10.232.0"):
        self.daemon, self.client = f"{tag}-daemon", f"{tag}-client"
        self.daemon_dev, self.client_dev = f"{tag[:8]}-d", f"{tag[:8]}-c"
        self.daemon_ip, self.client_ip = f"{subnet}.1", f"{subnet}.2"

    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", *args], check=check, timeout=60)

    def up(self) -> "NetPair":
        self.down()  # what a killed earlier run left
        try:
            self._ip("netns", "add", self.daemon)
            self._ip("netns", "add", self.client)
            self._ip("link", "add", self.daemon_dev, "type", "veth", "peer", "name", self.client_dev)
            self._ip("link", "set", self.daemon_dev, "netns", self.daemon)
            self._ip("link", "set", self.client_dev, "netns", self.client)
            for ns, dev, addr in ((self.daemon, self.daemon_dev, self.daemon_ip),
                                  (self.client, self.client_dev, self.client_ip)):
                self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                self._ip("-n", ns, "link", "set", "lo", "up")
                self._ip("-n", ns, "link", "set", dev, "up")
        except BenchError:
            self.down()
            raise
        log(f"network namespaces {self.daemon} ({self.daemon_ip}) and {self.client} ({self.client_ip}) up")
        return self

    def down(self) -> None:
        for ns in (self.daemon, self.client):
            self._ip("netns", "del", ns, check=False)
        # A veth not yet moved into a namespace stays in ours.
        self._ip("link", "del", self.daemon_dev, check=False)

    def __enter__(self) -> "NetPair":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def client_tx_bytes(self) -> int:
        """Bytes the client's veth has sent (everything the client sent the daemon's namespace, headers too)."""
        p = self._ip("-n", self.client, "-s", "-j", "link", "show", "dev", self.client_dev)
        try:
            return int(json.loads(p.stdout)[0]["stats64"]["tx"]["bytes"])
        except (ValueError, KeyError, IndexError) as e:
            raise BenchError(f"no TX byte counter in `ip -s -j link show` of {self.client_dev}: {p.stdout[:500]}") from e
