"""What to render: consul-template's `template { }` blocks, `-template "in:out[:command]"` and
`wait { min max }`, read from already-decoded configuration (HCL or JSON) into values.

A template block:

    template {
      source           = "in.ctmpl"        # or contents = "..."
      destination      = "out.conf"        # required
      command          = "nginx -s reload" # or a list: run without a shell
      command_timeout  = "30s"
      perms            = 0644              # unset: keep the existing file's mode, else 0644
      create_dest_dirs = true
      backup           = false             # keep <destination>.bak
      wait { min = "2s" max = "10s" }      # or wait = "2s:10s"
      left_delimiter   = "{{"
      right_delimiter  = "}}"
      function_denylist = ["env"]
      error_on_missing_key = false         # accepted; a missing map key prints <no value>
    }

`wait` without `max` waits at most 4 x `min`; `min` must be below `max`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from appliance.config.durations import DurationError, coerce_duration, parse_duration

DEFAULT_COMMAND_TIMEOUT_S = 30.0


class ConfigError(ValueError):
    """Bad template configuration; the message says which setting."""


@dataclass(frozen=True)
class Wait:
    min_s: float = 0.0
    max_s: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.min_s > 0


@dataclass(frozen=True)
class TemplateConfig:
    destination: str
    source: str = ""
    contents: str | None = None
    command: str | list[str] = ""
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    perms: int | None = None
    create_dest_dirs: bool = True
    backup: bool = False
    wait: Wait | None = None
    left_delimiter: str = "{{"
    right_delimiter: str = "}}"
    function_denylist: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.source or self.destination


def parse_wait(raw: Any) -> Wait:
    """`"2s"`, `"2s:10s"` or `{min = "2s" max = "10s"}` -> Wait."""
    try:
        if isinstance(raw, dict):
            lo = coerce_duration(raw.get("min", 0)) if raw.get("min") not in (None, "") else 0.0
            hi = coerce_duration(raw["max"]) if raw.get("max") not in (None, "") else 4 * lo
        elif isinstance(raw, str):
            lo_s, _, hi_s = raw.partition(":")
            lo = parse_duration(lo_s) if lo_s else 0.0
            hi = parse_duration(hi_s) if hi_s else 4 * lo
        else:
            raise ConfigError(f"wait: expected min[:max] or a block, got {raw!r}")
    except (DurationError, ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"wait: {exc}") from None
    if lo < 0 or hi < 0:
        raise ConfigError("wait: durations must not be negative")
    if lo and lo >= hi:
        raise ConfigError("wait: min must be less than max")
    return Wait(lo, hi)


def parse_flag(value: str) -> TemplateConfig:
    """`-template "in:out[:command]"`."""
    parts = value.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f'invalid template format "{value}": expected "source:destination[:command]"')
    return TemplateConfig(source=parts[0], destination=parts[1], command=parts[2] if len(parts) > 2 else "")


_KNOWN = frozenset(
    {
        "source", "destination", "contents", "command", "command_timeout", "perms", "create_dest_dirs",
        "backup", "wait", "left_delimiter", "right_delimiter", "function_denylist", "function_blacklist",
        "error_on_missing_key", "error_fatal",
    }
)  # fmt: skip


def _perms(raw: Any, octal_ints: bool) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"perms: not a file mode: {raw!r}")
    if isinstance(raw, str):
        try:
            return int(raw, 8)
        except ValueError:
            raise ConfigError(f"perms: not an octal file mode: {raw!r}") from None
    if isinstance(raw, int):
        # HCL reads `perms = 0644` as the digits 644: they are octal, as consul-template reads them
        if octal_ints and set(str(raw)) <= set("01234567"):
            return int(str(raw), 8)
        return raw
    raise ConfigError(f"perms: not a file mode: {raw!r}")


def _str(block: dict[str, Any], key: str, default: str = "") -> str:
    value = block.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"template: {key} must be a string, got {value!r}")
    return value


def parse_block(block: Any, *, octal_ints: bool = False) -> TemplateConfig:
    """One `template { }` block, as decoded from HCL (`octal_ints`) or JSON."""
    if not isinstance(block, dict):
        raise ConfigError(f"template: expected a block, got {block!r}")
    unknown = sorted(set(block) - _KNOWN)
    if unknown:
        raise ConfigError(f"template: unsupported setting(s): {', '.join(unknown)}")
    dest = _str(block, "destination")
    if not dest:
        raise ConfigError("template: missing destination")
    source = _str(block, "source")
    contents = block.get("contents")
    if contents is not None and not isinstance(contents, str):
        raise ConfigError("template: contents must be a string")
    if source and contents is not None:
        raise ConfigError(f"template: source and contents are mutually exclusive ({dest})")
    if not source and contents is None:
        raise ConfigError(f"template: missing source or contents ({dest})")
    command = block.get("command", "")
    if isinstance(command, list):
        if not all(isinstance(c, str) for c in command):
            raise ConfigError("template: command must be a string or a list of strings")
    elif not isinstance(command, str):
        raise ConfigError("template: command must be a string or a list of strings")
    try:
        timeout = coerce_duration(block["command_timeout"]) if "command_timeout" in block else DEFAULT_COMMAND_TIMEOUT_S
    except (DurationError, ValueError, TypeError) as exc:
        raise ConfigError(f"template: command_timeout: {exc}") from None
    deny = block.get("function_denylist", block.get("function_blacklist", [])) or []
    if not isinstance(deny, list):
        raise ConfigError("template: function_denylist must be a list")
    return TemplateConfig(
        destination=dest,
        source=source,
        contents=contents,
        command=command,
        command_timeout_s=timeout,
        perms=_perms(block["perms"], octal_ints) if block.get("perms") is not None else None,
        create_dest_dirs=bool(block.get("create_dest_dirs", True)),
        backup=bool(block.get("backup", False)),
        wait=parse_wait(block["wait"]) if block.get("wait") is not None else None,
        left_delimiter=_str(block, "left_delimiter", "{{") or "{{",
        right_delimiter=_str(block, "right_delimiter", "}}") or "}}",
        function_denylist=tuple(str(d) for d in deny),
    )


@dataclass
class RunConfig:
    """Everything a config file may set for `cairn template`."""

    templates: list[TemplateConfig] = field(default_factory=list)
    wait: Wait | None = None
    address: str = ""
    token: str = ""


_TOP = frozenset({"template", "wait", "consul", "log_level", "pid_file", "kill_signal", "reload_signal", "max_stale",
                  "block_query_wait"})  # fmt: skip


def merge_file(run: RunConfig, data: Any, *, octal_ints: bool = False, origin: str = "") -> RunConfig:
    """Add one decoded config file to `run` (templates append, later scalars win)."""
    where = f"{origin}: " if origin else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}expected an object at the top level")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise ConfigError(f"{where}unsupported setting(s): {', '.join(unknown)}")
    blocks = data.get("template", [])
    if isinstance(blocks, dict):
        blocks = [blocks]
    try:
        templates = [parse_block(b, octal_ints=octal_ints) for b in blocks or []]
        wait = parse_wait(data["wait"]) if data.get("wait") is not None else run.wait
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    consul = data.get("consul") or {}
    if not isinstance(consul, dict):
        raise ConfigError(f"{where}consul: expected a block")
    return replace(
        run,
        templates=run.templates + templates,
        wait=wait,
        address=str(consul.get("address") or run.address),
        token=str(consul.get("token") or run.token),
    )
