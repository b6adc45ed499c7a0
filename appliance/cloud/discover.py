"""Cloud auto-join strings: go-discover's `key=value` grammar, checks, redaction and dispatch.

How it works
------------
A `retry_join` / `retry_join_wan` entry that contains `provider=` is a cloud auto-join string
(Consul's rule), e.g. `provider=aws tag_key=cairn tag_value=prod region=eu-west-1`. Everything
else is a host or host:port and passes through untouched.

* `parse(text)` is a port of go-discover's `config.go` state machine, with the same error texts
  (`key: missing '='`, `key: missing value`, `key: unbalanced quotes`, `key: duplicate key`, ...):
  tokens are separated by spaces only, `=` may have spaces around it, a token that starts with
  `"` runs to the next unescaped `"` and is decoded with Go's `strconv.Unquote` rules.
* `render(config)` is go-discover's `Config.String()`: `provider` first, the other keys sorted,
  empty values dropped, quoted when they hold a space, `"`, `\\` or `=`.
* `check(text)` goes further than go-discover, which ignores unknown keys and falls back to
  defaults on bad values: it names the entry's first mistake (unknown provider, unknown key,
  missing `tag_key`, an `addr_type` or `service` that does not exist, half a key pair). `cairn
  validate` and the agent's config builder use it, so a typo stops the agent at start instead of
  making it retry a join that can never work.
* `redact(text)` replaces `secret_access_key` and `session_token` values with `<hidden>` for logs.
* `expand(entries, cluster)` (the only I/O entry point, used by the retry-join loop on every
  attempt) turns each cloud entry into the addresses its provider finds now, in a worker thread,
  and logs what it found or why it could not, naming the (redacted) entry.

Everything but `expand` is a pure function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from appliance.cloud import DiscoverError

log = logging.getLogger("agent")

PROVIDERS_GO_DISCOVER = (
    "aliyun", "aws", "azure", "digitalocean", "gce", "k8s", "linode", "mdns", "os", "packet",
    "scaleway", "softlayer", "srv", "tencentcloud", "triton", "vsphere",
)
SUPPORTED = ("aws",)
SECRET_KEYS = ("secret_access_key", "session_token")
HIDDEN = "<hidden>"


# --------------------------------------------------------------------------------------------
# go-discover's grammar


def is_cloud(entry: str) -> bool:
    """Consul's rule: an entry with `provider=` in it is a cloud auto-join string."""
    return "provider=" in entry


_GO_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                      "\\": "\\", '"': '"'}


def go_unquote(text: str) -> str:
    """Go's strconv.Unquote for a double-quoted literal; DiscoverError("invalid syntax") otherwise."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise DiscoverError("invalid syntax")
    body = text[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == '"' or ch == "\n":
            raise DiscoverError("invalid syntax")
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= len(body):
            raise DiscoverError("invalid syntax")
        esc = body[i + 1]
        if esc in _GO_SIMPLE_ESCAPES:
            out += _GO_SIMPLE_ESCAPES[esc].encode()
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise DiscoverError("invalid syntax")
            value = int(digits, 16)
            if esc == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise DiscoverError("invalid syntax")
                out += chr(value).encode("utf-8")
            i += 2 + width
        elif esc in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                raise DiscoverError("invalid syntax")
            out.append(int(digits, 8))
            i += 4
        else:
            raise DiscoverError("invalid syntax")
    return out.decode("utf-8", "replace")


def go_quote(text: str) -> str:
    """Go's strconv.Quote (printable characters kept, the rest escaped)."""
    parts = ['"']
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    for ch in text:
        if ch == '"' or ch == "\\":
            parts.append("\\" + ch)
        elif ch in named:
            parts.append(named[ch])
        elif ch.isprintable():
            parts.append(ch)
        elif ord(ch) < 0x80:
            parts.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            parts.append(f"\\u{ord(ch):04x}")
        else:
            parts.append(f"\\U{ord(ch):08x}")
    parts.append('"')
    return "".join(parts)


_TEXT, _EQUAL, _ERROR = "TEXT", "EQUAL", "ERROR"


def _lex(s: str) -> tuple[str, str, int]:
    """go-discover's lexer: the next item, its value and how many characters it used."""
    state = "start"
    for i, r in enumerate(s):
        if state == "start":
            if r == " ":
                pass
            elif r == "=":
                state = "equal"
            elif r == '"':
                state = "qtext"
            else:
                state = "text"
        elif state == "equal":
            return _EQUAL, "", i
        elif state == "text":
            if r == "=" or r == " ":
                return _TEXT, s[:i].strip(), i
        elif state == "qtext":
            if r == '"':
                state = "qtextend"
            elif r == "\\":
                state = "qtextesc"
        elif state == "qtextesc":
            state = "qtext"
        elif state == "qtextend":
            try:
                return _TEXT, go_unquote(s[:i].strip()), i
            except DiscoverError as err:
                return _ERROR, str(err), i
    if state == "equal":
        return _EQUAL, "", len(s)
    if state == "qtext":
        return _ERROR, "unbalanced quotes", len(s)
    if state == "qtextesc":
        return _ERROR, "unterminated escape sequence", len(s)
    if state == "qtextend":
        try:
            return _TEXT, go_unquote(s.strip()), len(s)
        except DiscoverError as err:
            return _ERROR, str(err), len(s)
    return _TEXT, s.strip(), len(s)


def parse(text: str) -> dict[str, str] | None:
    """go-discover's Parse: the key/value map, None for a blank string, DiscoverError otherwise."""
    config: dict[str, str] = {}
    s = text.strip()
    state = "key"
    key = ""
    while s:
        item, val, n = _lex(s)
        s = s[n:]
        if state == "key":
            if item == _TEXT:
                key = val
                if key in config:
                    raise DiscoverError(f"{key}: duplicate key")
                state = "equal"
            elif val == "":
                raise DiscoverError(f"{key}: - equals in key's value, enclosing double-quote needed "
                                    f'{key}="value-with-=-symbol"')
            else:
                raise DiscoverError(f"{key}: error with key=value pair {val}")
        elif state == "equal":
            if item != _EQUAL:
                raise DiscoverError(f"{key}: missing '='")
            state = "val"
        else:
            if item == _TEXT:
                config[key] = val
                state = "key"
            elif item == _ERROR:
                raise DiscoverError(f"{key}: {val}")
            else:
                raise DiscoverError(f"{key}: missing value")
    if state == "equal":
        raise DiscoverError(f"{key}: missing '='")
    if state == "val":
        raise DiscoverError(f"{key}: missing value")
    return config or None


def render(config: dict[str, str] | None) -> str:
    """go-discover's Config.String(): provider first, then the keys sorted; empty values dropped."""
    if not config:
        return ""

    def quote(s: str) -> str:
        return go_quote(s) if any(c in s for c in ' "\\=') else s

    keys = ["provider"] + sorted(k for k in config if k != "provider")
    return " ".join(f"{quote(k)}={quote(config[k])}" for k in keys if config.get(k, ""))


# --------------------------------------------------------------------------------------------
# checks and redaction


def check(text: str) -> dict[str, str]:
    """The entry's settings, or DiscoverError naming its first mistake (go-discover's texts where it
    has one, prefixed with "discover: " as go-discover's dispatcher does)."""
    try:
        config = parse(text)
    except DiscoverError as err:
        raise DiscoverError(f"discover: {err}") from None
    if not config or not config.get("provider"):
        raise DiscoverError("discover: no provider")
    provider = config["provider"]
    if provider not in PROVIDERS_GO_DISCOVER:
        raise DiscoverError(f"discover: unknown provider {provider}")
    if provider not in SUPPORTED:
        raise DiscoverError(f"discover: provider {provider} is not supported by cairn (supported: "
                            f"{', '.join(SUPPORTED)})")
    from appliance.cloud import aws  # the checks are pure; aws imports botocore only when it runs

    aws.settings(config)
    return config


def redact(text: str) -> str:
    """The entry with its secrets replaced by <hidden>, for logs and error messages."""
    try:
        config = parse(text)
    except DiscoverError:
        config = None
    if config:
        hidden = {k: (HIDDEN if k in SECRET_KEYS and v else v) for k, v in config.items()}
        return render(hidden)
    # unparseable: hide everything after a secret key's '=' up to the next space
    out = text
    for key in SECRET_KEYS:
        start = out.find(key)
        while start != -1:
            eq = out.find("=", start + len(key))
            if eq == -1:
                break
            end = out.find(" ", eq + 1)
            end = len(out) if end == -1 else end
            out = out[:eq + 1] + HIDDEN + out[end:]
            start = out.find(key, eq + 1 + len(HIDDEN))
    return out


# --------------------------------------------------------------------------------------------
# dispatch (the only I/O: the provider's API calls, in a worker thread)


def addresses(text: str) -> list[str]:
    """The addresses a cloud entry names now (blocking; DiscoverError on a bad entry or API error)."""
    config = check(text)
    from appliance.cloud import aws

    return aws.discover(config)


async def expand(entries: Iterable[str], cluster: str = "LAN",
                 discover: Callable[[str], list[str]] | None = None) -> list[str]:
    """The retry-join addresses for this attempt: each cloud auto-join entry replaced by what its
    provider finds now (asked again on every attempt, so replaced instances and tasks are found),
    other entries as they are. A provider that fails is logged with the redacted entry and its
    error; the other entries still count, and the retry loop tries again later."""
    discover = discover or addresses
    out: list[str] = []
    for entry in entries:
        if not is_cloud(entry):
            out.append(entry)
            continue
        try:
            found = await asyncio.to_thread(discover, entry)
        except DiscoverError as err:
            log.error('Cannot discover address: address="%s" error="%s"', redact(entry), err)
            continue
        except Exception as err:  # noqa: BLE001 - a provider's unexpected failure must not stop the agent
            log.error('Cannot discover address: address="%s" error="%s: %s"', redact(entry),
                      type(err).__name__, err)
            continue
        log.info('Discovered servers: cluster=%s servers="%s"', cluster, " ".join(found))
        out.extend(found)
    return list(dict.fromkeys(out))
