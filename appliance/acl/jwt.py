"""The `jwt` auth method: verifying a bearer JWT against static public keys or a JWKS document,
checking its claims, mapping them to variables, and matching binding-rule selectors.

Verification: the header's `alg` must be one of `JWTSupportedAlgs` (default RS256) and the
signature must verify with one of the method's keys (PEM `JWTValidationPubKeys`, or the JWKS
keys, whose `kid` must match when both carry one). Claims: `exp` and `nbf` with
`ExpirationLeeway`/`NotBeforeLeeway` plus `ClockSkewLeeway` (default 60 s), `iss` equal to
`BoundIssuer` when set, `aud` holding one of `BoundAudiences` when set. `ClaimMappings` and
`ListClaimMappings` turn claims (a name, or a `/pointer`) into the selector's `value.<name>` and
`list.<name>`.

Selectors are the part of go-bexpr binding rules use: `value.x == "v"`, `value.x != "v"`,
`"v" in list.x`, `"v" not in list.x`, `list.x is empty`, `list.x is not empty`, joined by `and`
and `or` (and binding tighter), optionally in parentheses. Pure: time and keys are passed in.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

DEFAULT_LEEWAY = 150.0  # exp and nbf, when the method sets none
CLOCK_SKEW = 60.0
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384,
                                                         "512": hashes.SHA512}
_CURVE_BYTES = {"ES256": 32, "ES384": 48, "ES512": 66}


class JWTError(ValueError):
    """A token that does not verify or whose claims do not pass."""


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _int_b64(text: str) -> int:
    return int.from_bytes(_b64(text), "big")


def jwk_key(jwk: dict[str, Any]) -> Any:
    """A public key from a JWK (RSA, EC P-256/384/521, OKP Ed25519)."""
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_int_b64(jwk["e"]), _int_b64(jwk["n"])).public_key()
    if kty == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[jwk["crv"]]
        return ec.EllipticCurvePublicNumbers(_int_b64(jwk["x"]), _int_b64(jwk["y"]), curve).public_key()
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_b64(jwk["x"]))
    raise JWTError(f"unsupported JWK key type {kty!r}")


def pem_keys(pems: list[str]) -> list[tuple[str, Any]]:
    out = []
    for pem in pems:
        try:
            out.append(("", serialization.load_pem_public_key(pem.encode())))
        except ValueError as err:
            raise JWTError(f"error parsing public key JWTValidationPubKeys: {err}") from None
    return out


def jwks_keys(document: str) -> list[tuple[str, Any]]:
    try:
        keys = json.loads(document)["keys"]
        return [(str(k.get("kid", "")), jwk_key(k)) for k in keys]
    except (ValueError, KeyError, TypeError) as err:
        raise JWTError(f"failed to decode keys: {err}") from None


def _verify(key: Any, alg: str, signed: bytes, sig: bytes) -> bool:
    try:
        if alg.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, signed, padding.PKCS1v15(), _HASHES[alg[2:]]())
        elif alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
            h = _HASHES[alg[2:]]()
            key.verify(sig, signed, padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH), h)
        elif alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
            size = _CURVE_BYTES[alg]
            if len(sig) != 2 * size:
                return False
            der = utils.encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            key.verify(der, signed, ec.ECDSA(_HASHES[alg[2:]]()))
        elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, signed)
        else:
            return False
    except (InvalidSignature, KeyError, ValueError):
        return False
    return True


def verify(token: str, keys: list[tuple[str, Any]], config: dict[str, Any], now: float) -> dict[str, Any]:
    """The claims of a token that verifies and passes the method's checks (JWTError otherwise)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("failed to parse signed JWT: compact JWS format must have three parts")
    try:
        header, claims = json.loads(_b64(parts[0])), json.loads(_b64(parts[1]))
        sig = _b64(parts[2])
    except ValueError as err:
        raise JWTError(f"failed to parse signed JWT: {err}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWTError("failed to parse signed JWT: not a JSON object")
    alg = str(header.get("alg", ""))
    if alg not in (config.get("JWTSupportedAlgs") or ["RS256"]):
        raise JWTError(f'unsupported signing algorithm "{alg}"')
    signed = (parts[0] + "." + parts[1]).encode()
    kid = str(header.get("kid", ""))
    if not any((not kid or not k or k == kid) and _verify(key, alg, signed, sig) for k, key in keys):
        raise JWTError("failed to verify id token signature")
    skew = float(config.get("ClockSkewLeeway") or CLOCK_SKEW)
    exp_leeway = float(config.get("ExpirationLeeway") or DEFAULT_LEEWAY)
    nbf_leeway = float(config.get("NotBeforeLeeway") or DEFAULT_LEEWAY)
    if isinstance(claims.get("exp"), (int, float)) and now > claims["exp"] + exp_leeway + skew:
        raise JWTError("token is expired (exp)")
    if isinstance(claims.get("nbf"), (int, float)) and now < claims["nbf"] - nbf_leeway - skew:
        raise JWTError("token not valid yet (nbf)")
    issuer = config.get("BoundIssuer")
    if issuer and claims.get("iss") != issuer:
        raise JWTError("validation failed, invalid issuer claim (iss)")
    audiences = config.get("BoundAudiences") or []
    if audiences:
        aud = claims.get("aud")
        have = aud if isinstance(aud, list) else [aud] if aud else []
        if not set(have) & set(audiences):
            raise JWTError("invalid audience (aud) claim: audience not found")
    return claims


def _claim(claims: dict[str, Any], name: str) -> Any:
    if not name.startswith("/"):
        return claims.get(name)
    value: Any = claims
    for part in name.strip("/").split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def mapped(claims: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The selector variables: ClaimMappings to value.*, ListClaimMappings to list.*."""
    values: dict[str, str] = {}
    for claim, name in (config.get("ClaimMappings") or {}).items():
        found = _claim(claims, claim)
        if isinstance(found, (str, int, float, bool)):
            values[name] = str(found).lower() if isinstance(found, bool) else str(found)
    lists: dict[str, list[str]] = {}
    for claim, name in (config.get("ListClaimMappings") or {}).items():
        found = _claim(claims, claim)
        items = found if isinstance(found, list) else [found] if found is not None else []
        lists[name] = [str(x) for x in items if isinstance(x, (str, int, float))]
    return values, lists


_TERM = re.compile(r'^\s*(?:(?P<sel>value\.[\w\-]+)\s*(?P<op>==|!=)\s*"(?P<v>[^"]*)"'
                   r'|"(?P<v2>[^"]*)"\s+(?P<neg>not\s+)?in\s+(?P<sel2>list\.[\w\-]+)'
                   r'|(?P<sel3>list\.[\w\-]+)\s+is\s+(?P<neg3>not\s+)?empty)\s*$')


class SelectorError(ValueError):
    pass


def _split(text: str, word: str) -> list[str]:
    """Split on a keyword outside quotes and parentheses."""
    out, depth, quoted, start, i = [], 0, False, 0, 0
    pat = f" {word} "
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and text.startswith(pat, i):
            out.append(text[start:i])
            i += len(pat)
            start = i
            continue
        i += 1
    out.append(text[start:])
    return out


def check_selector(selector: str) -> None:
    if selector.strip():
        matches(selector, {}, {})


def matches(selector: str, values: dict[str, str], lists: dict[str, list[str]]) -> bool:
    """Whether a binding rule's selector holds for these variables (an empty one always does)."""
    text = selector.strip()
    if not text:
        return True
    ors = _split(text, "or")
    if len(ors) > 1:
        return any([matches(part, values, lists) for part in ors])  # every part checked for syntax
    ands = _split(text, "and")
    if len(ands) > 1:
        return all([matches(part, values, lists) for part in ands])
    if text.startswith("(") and text.endswith(")"):
        return matches(text[1:-1], values, lists)
    m = _TERM.match(text)
    if m is None:
        raise SelectorError(f"Selector is invalid: {text}")
    if m.group("sel"):
        have = values.get(m.group("sel")[len("value."):])
        return (have == m.group("v")) == (m.group("op") == "==")
    if m.group("sel2"):
        inside = m.group("v2") in lists.get(m.group("sel2")[len("list."):], [])
        return inside != bool(m.group("neg"))
    empty = not lists.get(m.group("sel3")[len("list."):])
    return empty != bool(m.group("neg3"))
