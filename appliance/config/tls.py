"""The `tls { }` block and its deprecated top-level keys, resolved per listener and checked.

How it works
------------
Consul 1.12+ keeps TLS settings in `tls { defaults {} internal_rpc {} https {} grpc {} }`; each
listener's settings are `defaults` overlaid with its own block. The older top-level keys still
load and land where Consul puts them: `ca_file`, `ca_path`, `cert_file`, `key_file`,
`tls_min_version`, `tls_cipher_suites`, `verify_incoming` and `verify_outgoing` under
`defaults`; `verify_incoming_rpc` and `verify_server_hostname` under `internal_rpc`;
`verify_incoming_https` under `https`, each with Consul's deprecation warning. A key set in the
`tls` block wins over its old spelling.
`verify_server_hostname` implies `verify_outgoing` (the hostname is checked on outgoing RPC).

`resolve` returns the frozen `TLSConfig` (runtime.py); the checks raise ConfigError, naming the
block (`tls.internal_rpc`, `tls.https`): an unknown TLS version or cipher suite, a certificate
without its key (or a key without its certificate), verify_incoming or verify_outgoing without a
CA, verify_incoming without a certificate to present; an HTTPS port without a certificate is a
warning (as in Consul, the listener starts and every handshake fails).
Whether the files exist and parse is the driver's business (appliance/tls/context.py), at start
and on every reload.

`auto_encrypt { tls allow_tls dns_san ip_san }` lands in the same TLSConfig, with Consul's rules:
`auto_encrypt.tls can only be used on a client.`, `auto_encrypt.allow_tls can only be used on a
server.`, and Consul's warning when allow_tls is on without internal_rpc's verify_incoming. A
client agent with auto_encrypt.tls needs no certificate of its own for verify_incoming (the
server gives it one) nor a CA for verify_outgoing (the server's answer carries the roots); its
outgoing RPC always uses TLS.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from appliance.config.errors import ConfigError
from appliance.config.runtime import TLSConfig, TLSSettings

LISTENER_BLOCKS = ("internal_rpc", "https", "grpc")
SETTING_KEYS = ("ca_file", "ca_path", "cert_file", "key_file", "verify_incoming", "verify_outgoing",
                "verify_server_hostname", "tls_min_version", "tls_cipher_suites")
# old top-level key -> (block, key)
DEPRECATED = {
    "ca_file": ("defaults", "ca_file"),
    "ca_path": ("defaults", "ca_path"),
    "cert_file": ("defaults", "cert_file"),
    "key_file": ("defaults", "key_file"),
    "tls_min_version": ("defaults", "tls_min_version"),
    "tls_cipher_suites": ("defaults", "tls_cipher_suites"),
    "verify_incoming": ("defaults", "verify_incoming"),
    "verify_outgoing": ("defaults", "verify_outgoing"),
    "verify_incoming_rpc": ("internal_rpc", "verify_incoming"),
    "verify_incoming_https": ("https", "verify_incoming"),
    "verify_server_hostname": ("internal_rpc", "verify_server_hostname"),
}
VERSIONS = {"TLSv1_0": "TLSv1_0", "TLSv1_1": "TLSv1_1", "TLSv1_2": "TLSv1_2", "TLSv1_3": "TLSv1_3",
            "tls10": "TLSv1_0", "tls11": "TLSv1_1", "tls12": "TLSv1_2", "tls13": "TLSv1_3"}
# Go's cipher suite names (TLS 1.0-1.2; TLS 1.3's suites are not configurable) -> OpenSSL's
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
}


def _block(m: dict[str, Any], name: str) -> dict[str, Any]:
    tls = m.get("tls") or {}
    return {k: v for k, v in (tls.get(name) or {}).items() if v is not None}


def _settings(name: str, values: dict[str, Any], auto_tls: bool = False) -> TLSSettings:
    where = f"tls.{name}"
    version = values.get("tls_min_version") or "TLSv1_2"
    if version not in VERSIONS:
        raise ConfigError(f'{where}.tls_min_version: unsupported TLS version "{version}"; '
                          "must be one of TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3")
    suites = tuple(s.strip() for s in (values.get("tls_cipher_suites") or "").split(",") if s.strip())
    for suite in suites:
        if suite not in CIPHER_SUITES:
            raise ConfigError(f'{where}.tls_cipher_suites: unsupported cipher suite "{suite}"')
    out = TLSSettings(
        ca_file=values.get("ca_file") or "", ca_path=values.get("ca_path") or "",
        cert_file=values.get("cert_file") or "", key_file=values.get("key_file") or "",
        verify_incoming=bool(values.get("verify_incoming", False)),
        verify_outgoing=bool(values.get("verify_outgoing", False) or values.get("verify_server_hostname", False)),
        verify_server_hostname=bool(values.get("verify_server_hostname", False)),
        tls_min_version=VERSIONS[version], tls_cipher_suites=suites)
    if bool(out.cert_file) != bool(out.key_file):
        missing = "key_file" if out.cert_file else "cert_file"
        raise ConfigError(f"{where}: {missing} must be set together with "
                          f"{'cert_file' if out.cert_file else 'key_file'}")
    has_ca = bool(out.ca_file or out.ca_path)
    if out.verify_incoming and not has_ca:
        raise ConfigError(f"{where}: verify_incoming set but no CA certificates were provided (ca_file or ca_path)")
    if out.verify_incoming and not out.cert_file and not auto_tls:
        raise ConfigError(f"{where}: verify_incoming set but no certificate was provided (cert_file and key_file)")
    if out.verify_outgoing and not has_ca and not auto_tls:
        raise ConfigError(f"{where}: verify_outgoing set but no CA certificates were provided (ca_file or ca_path)")
    return out


def _auto_encrypt(m: dict[str, Any], server: bool) -> dict[str, Any]:
    block = m.get("auto_encrypt") or {}
    tls, allow = bool(block.get("tls") or False), bool(block.get("allow_tls") or False)
    if server and tls:
        raise ConfigError("auto_encrypt.tls can only be used on a client.")
    if not server and allow:
        raise ConfigError("auto_encrypt.allow_tls can only be used on a server.")
    ips = []
    for value in block.get("ip_san") or ():
        try:
            ips.append(str(ipaddress.ip_address(str(value).strip())))
        except ValueError:
            raise ConfigError(f"auto_encrypt.ip_san: invalid ip address: {value}") from None
    return {"auto_encrypt_tls": tls, "auto_encrypt_allow_tls": allow,
            "auto_encrypt_dns_san": tuple(str(d) for d in block.get("dns_san") or ()),
            "auto_encrypt_ip_san": tuple(ips)}


def resolve(m: dict[str, Any], https_port: int, warnings: list[str], server: bool = False) -> TLSConfig:
    """Each listener's TLS settings from the merged configuration mapping (see the module docstring)."""
    auto = _auto_encrypt(m, server)
    blocks: dict[str, dict[str, Any]] = {"defaults": {}, **{name: {} for name in LISTENER_BLOCKS}}
    for old, (block, key) in DEPRECATED.items():
        if m.get(old) is not None:
            blocks[block][key] = m[old]
            warnings.append(f"The '{old}' field is deprecated. Use the 'tls.{block}.{key}' field instead.")
    if m.get("tls_prefer_server_cipher_suites") is not None:
        warnings.append("The 'tls_prefer_server_cipher_suites' field is deprecated and ignored.")
    for name in blocks:
        blocks[name].update(_block(m, name))
    auto_tls = auto["auto_encrypt_tls"]
    resolved = {name: _settings(name, {**blocks["defaults"], **blocks[name]}, auto_tls) for name in LISTENER_BLOCKS}
    if auto["auto_encrypt_allow_tls"] and not resolved["internal_rpc"].verify_incoming:
        warnings.append("if auto_encrypt.allow_tls is turned on, tls.internal_rpc.verify_incoming should be enabled "
                        "(either explicitly or via tls.defaults.verify_incoming). It is necessary to turn it off "
                        "during a migration to TLS, but it should definitely be turned on afterwards.")
    if https_port >= 0 and not resolved["https"].cert_file and not auto_tls:
        warnings.append(f"ports.https is {https_port} but tls.https has no cert_file and key_file: "
                        "every TLS handshake on the HTTPS port will fail")
    return TLSConfig(internal_rpc=resolved["internal_rpc"], https=resolved["https"], grpc=resolved["grpc"], **auto)
