"""A network of its own for each container: a namespace, a veth pair to the worker, and NAT.

Each container (and each image build step) runs in a network namespace the worker makes for
it, with a point-to-point veth pair to the host: the container's end, eth0, has the second
address of a /30 and a default route to the host's end, which has the first. The host routes
what it sends out to the world and masquerades it (nftables). The worker's nftables table
refuses, at once and with "administratively prohibited" rather than a silent drop:
- anything a container starts towards the host itself: every one of its addresses, so its
  loopback services (control plane, worker, anything else) too, since those are reached
  through them or not at all; the control plane is reached through the worker's relay socket;
- anything towards another container (of this worker or another one: the whole range), and
  link-local addresses (a cloud's metadata service);
- anything from outside towards a container that the container did not start, and all IPv6.
A container given a CIDR allowlist (a sandbox's cidr_allowlist=) reaches, of all the rest, only
those networks: its host end's name maps (the table's `allowlists` map) to a chain of its own
that lets its networks through and refuses the others.
The one way out to the host is the control plane's port on the container's own gateway: the
worker's table translates it (DNAT) to the control plane's address, so a container's stream to
the control plane goes through the kernel alone (its calls carry its own credential). A control
plane the worker reaches by name or over IPv6 only is reached through the relay (relay.py) instead.

Several workers may share a machine. Each takes a numbered slot (an flock on a file under
/run/ember/net, held while it runs) that fixes its addresses (a /22 of the range), its table's
name and its interface names, so their rules never collide; the worker that next takes a
slot first removes what a killed one left there (a killed worker's containers die with it).
Workers that share a machine but each have a network namespace of their own (tests/test_hosts.py
makes each a host that way) take slots the same way: /run/ember/net and /run/netns are the
machine's, while each one's table, forwarding switch and interfaces are in its own namespace.
"""

import asyncio
import dataclasses
import fcntl
import ipaddress
import logging
import os
import pathlib
import shutil
import socket
import subprocess

log = logging.getLogger("ember.worker")

STATE_DIR = pathlib.Path("/run/ember/net")  # a tmpfs: what it holds is gone after a reboot, as are the rules
NETNS_DIR = pathlib.Path("/run/netns")      # where `ip netns` keeps named namespaces
RANGE = os.environ.get("EMBER_CONTAINER_NETWORK", "10.231.0.0/16")  # containers' addresses, all workers
WORKER_PREFIX = 22  # each worker's share of RANGE: 256 containers of a /30 each


class NetworkError(Exception):
    pass


def missing() -> str | None:
    """Why containers cannot get a network here (with the fix), or None."""
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return (f"{tool}, which gives containers their network, is not installed "
                    f"(apt-get install {package})")
    return None


@dataclasses.dataclass(frozen=True)
class Attachment:
    """One container's network: a named namespace and the host's end of its veth pair."""
    slot: int
    netns: str      # its name, as in `ip netns`
    host_if: str    # the host's end of the veth pair
    address: str    # the container's address (eth0)
    gateway: str    # the host's end

    @property
    def path(self) -> str:
        """What the sandbox joins (setns) before it makes the container's other namespaces."""
        return str(NETNS_DIR / self.netns)


class Network:
    """The worker's container network: its slot, its nftables table, a namespace per container."""

    def __init__(self, state_dir: pathlib.Path, control_plane: tuple[str, int] | None = None):
        """`state_dir`: the worker's own (it keeps a resolv.conf for containers there, if needed).
        `control_plane`: its TCP (host, port), which containers reach at their gateway's port."""
        self.control_plane = _ipv4(control_plane)
        self.range = ipaddress.ip_network(RANGE)
        self.index, self.lock = self._take_slot()
        self.subnet = list(self.range.subnets(new_prefix=WORKER_PREFIX))[self.index]
        self.table = f"ember-net-{self.index}"
        self.if_prefix = f"em{self.index}s"   # + container slot: at most 15 characters
        self.ns_prefix = f"ember-{self.index}-"
        self.free = list(range(self.subnet.num_addresses // 4))
        self.allowlisted: set[str] = set()  # host ends of containers that have an allowlist
        self.closed = False
        self._remove_leftovers()
        self._install_rules()
        self.resolv_conf = _resolv_conf(state_dir)

    def _take_slot(self) -> tuple[int, int]:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        slots = 2 ** (WORKER_PREFIX - self.range.prefixlen)
        for index in range(slots):
            fd = os.open(STATE_DIR / f"{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return index, fd
            except BlockingIOError:
                os.close(fd)
        raise NetworkError(f"all {slots} network slots of {self.range} are taken by other workers on this machine")

    def _remove_leftovers(self):
        """What a worker that held this slot before and was killed left behind."""
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)
        for ns in NETNS_DIR.glob(self.ns_prefix + "*") if NETNS_DIR.is_dir() else ():
            subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True)
        for dev in _links():
            if dev.startswith(self.if_prefix):
                subprocess.run(["ip", "link", "delete", dev], capture_output=True)

    def _install_rules(self):
        # Forwarding is the machine's switch for routing at all; containers' traffic needs it.
        # Other traffic is not affected by it unless the machine has routes for it.
        pathlib.Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        ifs = f'"{self.if_prefix}*"'
        refuse = "reject with icmpx type admin-prohibited"
        to_control_plane = ""
        if self.control_plane is not None:
            ip, port = self.control_plane
            to_control_plane = f"""
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname {ifs} ip daddr {self.subnet} tcp dport {port} dnat ip to {ip}:{port}
    }}"""
        rules = f"""
table inet {self.table} {{{to_control_plane}
    map allowlists {{
        type ifname : verdict;
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname {ifs} ct state established,related accept
        iifname {ifs} ct status dnat accept
        iifname {ifs} {refuse}
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname {ifs} meta nfproto ipv6 {refuse}
        iifname {ifs} ip daddr {{ {self.range}, 169.254.0.0/16 }} {refuse}
        iifname {ifs} ct status dnat accept
        iifname {ifs} iifname vmap @allowlists
        oifname {ifs} ct state established,related accept
        oifname {ifs} {refuse}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {self.subnet} oifname != {ifs} masquerade
    }}
}}
"""
        proc = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NetworkError(f"could not install the containers' firewall rules (nft): {proc.stderr.strip()}")
        log.info("containers' network: %s, nftables table inet %s", self.subnet, self.table)

    async def attach(self, of_pid: int | None = None) -> Attachment:
        """A new namespace with its veth pair, addresses and routes, ready for a container; with
        `of_pid`, the network namespace of that process is the one (a forked container's, made
        with it, forkns.py: it could not join one of host root's)."""
        if not self.free:
            raise NetworkError(f"this worker's {len(list(self.subnet.subnets(new_prefix=30)))} container "
                               "network slots are all in use")
        slot = self.free.pop(0)
        base = self.subnet.network_address + 4 * slot
        a = Attachment(slot, f"{self.ns_prefix}{slot}", f"{self.if_prefix}{slot}", str(base + 2), str(base + 1))
        try:
            made = f"netns add {a.netns}\n" if of_pid is None else f"netns attach {a.netns} {of_pid}\n"
            await _ip(["-batch", "-"], made +
                      f"link add {a.host_if} type veth peer name eth0 netns {a.netns}\n"
                      f"addr add {a.gateway}/30 dev {a.host_if}\n"
                      f"link set {a.host_if} up\n")
            # No IPv6 on the host's end: the container's link-local address reaches nothing there.
            pathlib.Path(f"/proc/sys/net/ipv6/conf/{a.host_if}/disable_ipv6").write_text("1")
            if self.control_plane is not None and ipaddress.ip_address(self.control_plane[0]).is_loopback:
                # A control plane on loopback: its translated packets may be routed there.
                pathlib.Path(f"/proc/sys/net/ipv4/conf/{a.host_if}/route_localnet").write_text("1")
            await _ip(["-n", a.netns, "-batch", "-"], "link set lo up\n"
                      f"addr add {a.address}/30 dev eth0\nlink set eth0 up\n"
                      f"route add default via {a.gateway}\n")
        except (NetworkError, OSError):
            await self.release(a)
            raise
        return a

    async def allow_only(self, a: Attachment, cidrs: list[str]):
        """From now on the container reaches, of what containers may reach, only these networks."""
        try:  # checked by the control plane already; what reaches nft is what ipaddress writes
            nets = ", ".join(str(ipaddress.IPv4Network(c)) for c in cidrs)
        except ValueError as e:
            raise NetworkError(f"cidr_allowlist: {e}") from None
        refuse = "reject with icmpx type admin-prohibited"
        script = (f"add chain inet {self.table} allow-{a.host_if}\n"
                  f"add rule inet {self.table} allow-{a.host_if} ip daddr {{ {nets} }} return\n"
                  f"add rule inet {self.table} allow-{a.host_if} {refuse}\n"
                  f'add element inet {self.table} allowlists {{ "{a.host_if}" : jump allow-{a.host_if} }}\n')
        await _nft(script)
        self.allowlisted.add(a.host_if)

    async def release(self, a: Attachment):
        if self.closed:  # the worker stops, and close() removed them all
            return
        # The link first: deleting the namespace frees the pair only once nothing holds it.
        await _ip(["-force", "-batch", "-"], f"link delete {a.host_if}\nnetns delete {a.netns}\n", check=False)
        if a.host_if in self.allowlisted:  # the next container of its slot may have none
            self.allowlisted.discard(a.host_if)
            await _nft(f'delete element inet {self.table} allowlists {{ "{a.host_if}" }}\n'
                       f"delete chain inet {self.table} allow-{a.host_if}\n", check=False)
        if a.slot not in self.free:
            self.free.append(a.slot)

    def control_plane_address(self, a: Attachment) -> str | None:
        """HOST:PORT at which the container reaches the control plane (None: through the relay)."""
        return f"{a.gateway}:{self.control_plane[1]}" if self.control_plane is not None else None

    def close(self):
        """Remove this worker's rules and namespaces (as it stops) and give up its slot."""
        self.closed = True
        self._remove_leftovers()
        os.close(self.lock)


async def _ip(args: list[str], script: str, check: bool = True):
    # In a thread, not as an asyncio subprocess: one of those cancelled while it starts (as the
    # worker stops) was seen to leave asyncio.run waiting for it forever.
    proc = await asyncio.to_thread(subprocess.run, ["ip", *args], input=script, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetworkError(f"could not set up a container's network (ip {' '.join(args)}): {proc.stderr.strip()}")


async def _nft(script: str, check: bool = True):
    proc = await asyncio.to_thread(subprocess.run, ["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetworkError(f"could not set a container's network rules (nft): {proc.stderr.strip()}")


def _links() -> list[str]:
    """The names of the network interfaces of this worker's network namespace. Asked of the kernel
    (netlink), not read from /sys/class/net: that shows the namespace of whoever mounted /sys, which
    is another one for a worker started in a namespace of its own by nsenter (one host of several)."""
    proc = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    # Lines like "7: em0s3@if2: <BROADCAST,...> ...": the name ends at "@" (a veth's peer) or ":".
    return [line.split(":")[1].strip().split("@")[0] for line in proc.stdout.splitlines() if line.count(":") >= 2]


def _ipv4(address: tuple[str, int] | None) -> tuple[str, int] | None:
    """The control plane's IPv4 address and port, if it has one (a name is resolved once, now)."""
    if address is None:
        return None
    try:
        return ipaddress.IPv4Address(address[0]).exploded, address[1]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address[0], address[1], socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return None
    return (infos[0][4][0], address[1]) if infos else None


def _resolv_conf(state_dir: pathlib.Path) -> str | None:
    """The resolv.conf to give containers: the host's, unless its resolver is on loopback
    (systemd-resolved's 127.0.0.53, a local dnsmasq), which containers cannot reach. Then
    systemd-resolved's list of the servers it asks, if there is one; else the host's without
    its loopback servers, and a warning. EMBER_CONTAINER_DNS (addresses, comma-separated)
    overrides all of it. None: the host has no resolv.conf."""
    override = [s.strip() for s in os.environ.get("EMBER_CONTAINER_DNS", "").split(",") if s.strip()]
    host = pathlib.Path("/etc/resolv.conf")
    if not override:
        if not host.exists():
            return None
        if not _loopback_servers(host.read_text()):
            return os.path.realpath(host)
        upstream = pathlib.Path("/run/systemd/resolve/resolv.conf")
        if upstream.exists() and not _loopback_servers(upstream.read_text()):
            return str(upstream)
    lines = [line for line in (host.read_text().splitlines() if host.exists() else [])
             if not (line.split()[:1] == ["nameserver"] and _is_loopback(line.split()[1:2]))]
    lines += [f"nameserver {s}" for s in override]
    if not any(line.split()[:1] == ["nameserver"] for line in lines):
        log.warning("containers have no DNS: this machine's resolver is on loopback, which containers cannot "
                    "reach; set EMBER_CONTAINER_DNS to the addresses of DNS servers they can reach")
    path = state_dir / "resolv.conf"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _loopback_servers(text: str) -> list[str]:
    return [w[1] for w in (line.split() for line in text.splitlines())
            if w[:1] == ["nameserver"] and _is_loopback(w[1:2])]


def _is_loopback(words: list[str]) -> bool:
    try:
        return bool(words) and ipaddress.ip_address(words[0].split("%")[0]).is_loopback
    except ValueError:
        return False
