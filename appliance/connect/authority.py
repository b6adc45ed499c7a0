"""The CA's life as commands: its first root, a configuration change (maybe a rotation), old roots
dropped, and the answers built from the stored state (reference/connect.md §1.3, §1.6, §1.9, §1.10).

How it works
------------
The stored CA (appliance/state/connect.py) is a configuration (`Provider`, the operator's
`Config` map, the `ClusterID`), the roots, and the private key of each root. `bootstrap` builds
the `init` command from the agent's `connect { ca_config }`: the operator's key and root if given
(checked to match), else a new key of the configured type and a new root.

`update` is Consul's UpdateConfiguration. The provider's identity is its key material and key
type (`PrivateKey`, `RootCert`, `PrivateKeyType`, `PrivateKeyBits`): when that is unchanged
(only TTLs changed) the configuration alone is replaced and the root stays. Otherwise a new root
is made; if it is the active root (the operator gave the same certificate) nothing rotates.
Rotation marks the old root inactive (`RotatedOutAt`), appends the new one as active and, unless
`ForceWithoutCrossSigning`, has the old key sign the new root: that cross-signed certificate is
the new root's first `IntermediateCerts` entry and is sent with every new leaf, so a peer that
still trusts only the old root accepts the new leaves. Roots and configuration are written by one
command, compare-and-set on the roots' index.

A rotated-out root stays published for the leaf TTL (`prunable`): every leaf it signed has
expired by then. `State` in a configuration is the provider's state, which the built-in provider
keeps to itself: it must be omitted or identical (Consul's text).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from appliance.connect import ca, spiffe

MAX_CROSS_SIGNED = 1


def trust_domain(tables: Any) -> str:
    conf = tables.ca_config
    return spiffe.trust_domain(conf["ClusterID"]) if conf else ""


def render_root(root: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in root.items() if k != "RotatedOutAt"}
    out.setdefault("IntermediateCerts", None)
    return out


def roots_body(tables: Any) -> dict[str, Any]:
    """GET /v1/connect/ca/roots: Consul's IndexedCARoots."""
    active = tables.active_root()
    return {"ActiveRootID": active["ID"] if active else "", "TrustDomain": trust_domain(tables),
            "Roots": [render_root(r) for r in tables.roots] if tables.roots else None}


def roots_pem(tables: Any) -> str:
    """?pem=true: every root followed by its intermediates."""
    out = []
    for root in tables.roots:
        out.append(root["RootCert"])
        out.extend(root.get("IntermediateCerts") or ())
    return "".join(p if p.endswith("\n") else p + "\n" for p in out)


def config_body(tables: Any) -> dict[str, Any] | None:
    conf = tables.ca_config
    if conf is None:
        return None
    return {"Provider": conf["Provider"], "Config": conf["Config"], "State": None, "ForceWithoutCrossSigning": False,
            "CreateIndex": conf["CreateIndex"], "ModifyIndex": conf["ModifyIndex"]}


def _identity(cfg: ca.CAConfig) -> tuple[str, str, str, int]:
    return (cfg.private_key, cfg.root_cert, cfg.key_type, cfg.key_bits)


def _key_and_root(cfg: ca.CAConfig, cluster_id: str, serial: int, now: float, uid: str) -> tuple[Any, str]:
    if cfg.private_key:
        key = ca.load_key(cfg.private_key)
        if cfg.root_cert:
            ca.check_root(key, cfg.root_cert)
            return key, cfg.root_cert
    else:
        key = ca.generate_key(cfg.key_type, cfg.key_bits)
    return key, ca.make_root(key, cluster_id, serial, now, cfg.root_ttl_s, uid)


def bootstrap(raw_config: dict[str, Any], cluster_id: str, serial: int, now: float, uid: str) -> dict[str, Any]:
    """The `init` command for a CA with this configuration (CAError if it is refused); the TTLs
    not given take their defaults, shown as Consul shows them."""
    given = ca.canonical(raw_config)
    raw_config = {**{k: v for k, v in ca.DEFAULT_CONFIG.items() if k not in given}, **raw_config}
    cfg = ca.parse_config(raw_config)
    key, root_pem = _key_and_root(cfg, cluster_id, serial, now, uid)
    root = ca.root_record(root_pem, cluster_id, key)
    return {"Type": "connect_ca", "Op": "init", "Serial": serial,
            "Config": {"Provider": ca.PROVIDER, "Config": raw_config, "ClusterID": cluster_id},
            "Roots": [root], "Keys": {root["ID"]: ca.key_pem(key)}}


def update(tables: Any, provider: str, raw_config: dict[str, Any], force: bool, serials: tuple[int, int],
           now: float, uid: str) -> dict[str, Any] | None:
    """The `set` command for a new configuration, or None when nothing changes (CAError if refused)."""
    stored = tables.ca_config
    if provider != ca.PROVIDER:
        raise ca.CAError(f"could not initialize provider: unknown CA provider {provider!r}")
    if stored["Provider"] == provider and stored["Config"] == raw_config:
        return None
    try:
        cfg = ca.parse_config(raw_config)
    except ca.CAError as err:
        raise ca.CAError(f"error configuring provider: {err}") from None
    cluster_id = stored["ClusterID"]
    conf = {"Provider": provider, "Config": raw_config, "ClusterID": cluster_id}
    cmd: dict[str, Any] = {"Type": "connect_ca", "Op": "set", "Config": conf, "CAS": tables.roots_index}
    old_cfg = ca.parse_config(stored["Config"])
    active = tables.active_root()
    if active is not None and _identity(old_cfg) == _identity(cfg):
        return cmd  # only the TTLs or limits changed: same key, same root
    key, root_pem = _key_and_root(cfg, cluster_id, serials[0], now, uid)
    new_root = ca.root_record(root_pem, cluster_id, key)
    if active is not None and new_root["ID"] == active["ID"]:
        return cmd
    if active is not None and not force:
        old_key = ca.load_key(tables.keys[active["ID"]])
        new_root["IntermediateCerts"] = [ca.cross_sign(old_key, active["RootCert"], root_pem, serials[1], now)]
    roots = []
    for root in tables.roots:
        rec = {k: v for k, v in root.items() if not k.endswith("Index")}
        if rec.get("Active"):
            rec["Active"] = False
            rec["RotatedOutAt"] = ca.rfc3339(now)
        roots.append(rec)
    roots.append(new_root)
    cmd.update(Roots=roots, Keys={new_root["ID"]: ca.key_pem(key)}, Serial=max(serials))
    return cmd


def prunable(tables: Any, now: float) -> list[str]:
    """IDs of rotated-out roots whose leaves have all expired (rotated out a leaf TTL ago)."""
    if tables.ca_config is None:
        return []
    try:
        leaf_ttl = ca.parse_config(tables.ca_config["Config"]).leaf_ttl_s
    except ca.CAError:
        return []
    out = []
    for root in tables.roots:
        at = root.get("RotatedOutAt")
        if not root.get("Active") and at and _seconds(at) + leaf_ttl <= now:
            out.append(root["ID"])
    return out


def _seconds(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def signer(tables: Any) -> tuple[dict[str, Any], Any] | None:
    """The active root and its private key (the CA signs leaves with the root's key)."""
    active = tables.active_root()
    if active is None or active["ID"] not in tables.keys:
        return None
    return active, ca.load_key(tables.keys[active["ID"]])
