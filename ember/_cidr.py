"""A sandbox's cidr_allowlist=: the IPv4 networks its container may reach. Checked the same way
by the SDK (at create) and the control plane (which trusts no client)."""

import ipaddress

MAX_NETWORKS = 256  # a firewall set of its own per container: kept small


def check_allowlist(networks, block_network: bool = False) -> list[str]:
    """The networks, each as ipaddress writes it ("10.0.0.0/8"); ValueError naming the fault."""
    if isinstance(networks, (str, bytes)) or not isinstance(networks, (list, tuple)):
        raise ValueError(f"pass a list of networks, e.g. [\"10.0.0.0/8\", \"203.0.113.7/32\"] (got {networks!r})")
    if block_network:
        raise ValueError("cannot be given with block_network=True: a sandbox has no network, or only those "
                         "networks; pass one of them")
    if not networks:
        raise ValueError("[] would allow no network at all: pass block_network=True for that, or the networks "
                         "to allow")
    if len(networks) > MAX_NETWORKS:
        raise ValueError(f"at most {MAX_NETWORKS} networks (got {len(networks)}): pass wider ones")
    out = []
    for n in networks:
        if not isinstance(n, str):
            raise ValueError(f"{n!r} is not a network: pass strings like \"10.0.0.0/8\"")
        try:
            net = ipaddress.ip_network(n, strict=False)
        except ValueError:
            raise ValueError(f"{n!r} is not an IPv4 network: pass one like \"10.0.0.0/8\" or \"203.0.113.7/32\"") \
                from None
        if net.version != 4:
            raise ValueError(f"{n!r}: containers have IPv4 only (all IPv6 is refused them): pass IPv4 networks")
        if str(net) != n and "/" in n:
            raise ValueError(f"{n!r} has host bits set (or is not written plainly): pass {str(net)!r}")
        out.append(str(net))
    return out
