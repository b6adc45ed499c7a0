#!/usr/bin/env bash
# Prepare this machine to run cairn from a checkout:
#
#   1. Debian packages the tests need (listed in scripts/debian-packages.txt), only the missing ones;
#   2. uv, installed with pip (into the user site, or into the active virtualenv) when it is not
#      already on PATH, and made reachable on PATH;
#   3. the locked Python environment: `uv sync --frozen` (runtime and dev dependencies);
#   4. the npm packages the compat tests drive (tests/compat/npm: `npm ci` from its lock file),
#      with Node.js and npm from Debian's packages when the machine has no npm.
#
# Every step checks before it acts, so running it again is cheap and changes nothing.
#
# Run it (`bash scripts/bootstrap.sh`) or source it (`. scripts/bootstrap.sh`); sourcing keeps the
# PATH change that makes a freshly installed uv reachable, which is what scripts/dev.sh and
# scripts/test.sh do.
#
# Environment:
#   CAIRN_SKIP_APT=1   leave Debian packages alone
#   CAIRN_UV_SPEC      pip requirement used when uv must be installed (default: uv>=0.13,<0.14;
#                      uv.lock is written by uv 0.13)

_cairn_log() {
    printf 'bootstrap: %s\n' "$*" >&2
}

# Run a command as root: directly when we are root, through sudo otherwise.
_cairn_as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

_cairn_can_be_root() {
    [[ "$(id -u)" == 0 ]] || command -v sudo >/dev/null 2>&1
}

# Package names from the list file: comments and blank lines dropped.
_cairn_debian_list() {
    local line
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        line="${line//[[:space:]]/}"
        [[ -n "$line" ]] && printf '%s\n' "$line"
    done <"$1"
}

_cairn_is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

# Install Debian packages that are not installed yet. apt-get update runs only when apt does not
# know one of them, or when an install from the current lists fails (stale lists).
_cairn_apt_install() {
    local pkg missing=() need_update=0 out rc
    for pkg in "$@"; do
        _cairn_is_installed "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0

    if ! _cairn_can_be_root; then
        _cairn_log "missing Debian packages: ${missing[*]} (not root and no sudo; install them by hand)"
        return 0
    fi
    for pkg in "${missing[@]}"; do
        apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 || need_update=1
    done

    out="$(mktemp)"
    if ((need_update)); then
        _cairn_log "apt-get update"
        if ! _cairn_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update >"$out" 2>&1; then
            cat "$out" >&2
            rm -f "$out"
            return 1
        fi
    fi
    # The test peers (dnsmasq, prometheus) are servers: keep their packages from starting system
    # services (dnsmasq on port 53 would take over the host's resolver) while they install.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | _cairn_as_root tee /usr/sbin/policy-rc.d >/dev/null &&
            _cairn_as_root chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    _cairn_log "installing Debian packages: ${missing[*]}"
    _cairn_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >"$out" 2>&1
    rc=$?
    if ((rc != 0 && !need_update)); then
        _cairn_log "install failed; refreshing package lists and retrying"
        _cairn_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update >"$out" 2>&1 &&
            _cairn_as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${missing[@]}" >"$out" 2>&1
        rc=$?
    fi
    ((own_policy)) && _cairn_as_root rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || cat "$out" >&2
    rm -f "$out"
    return "$rc"
}

_cairn_debian_packages() {
    local list="$1" pkgs
    if [[ "${CAIRN_SKIP_APT:-}" == 1 ]]; then
        return 0
    fi
    mapfile -t pkgs < <(_cairn_debian_list "$list")
    ((${#pkgs[@]})) || return 0
    if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        _cairn_log "not a Debian-like system; install these yourself: ${pkgs[*]}"
        return 0
    fi
    _cairn_apt_install "${pkgs[@]}"
}

# True when `uv` on PATH is recent enough to read uv.lock.
_cairn_uv_ok() {
    local version major minor
    command -v uv >/dev/null 2>&1 || return 1
    version="$(uv --version 2>/dev/null | awk '{print $2}')"
    IFS=. read -r major minor _ <<<"$version"
    [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
    ((major > 0 || minor >= 13))
}

_cairn_prepend_path() {
    [[ -n "$1" && -d "$1" ]] || return 0
    case ":$PATH:" in
        *":$1:"*) ;;
        *) PATH="$1:$PATH" ;;
    esac
    export PATH
    hash -r
}

_cairn_install_uv() {
    local py spec out bindir in_venv=0
    spec="${CAIRN_UV_SPEC:-uv>=0.13,<0.14}"

    # A uv installed earlier by this script (or by hand) may just be off PATH.
    _cairn_prepend_path "$HOME/.local/bin"
    _cairn_prepend_path "$HOME/.cargo/bin"
    _cairn_uv_ok && return 0

    py="$(command -v python3 || true)"
    if [[ -z "$py" ]] || ! "$py" -m pip --version >/dev/null 2>&1; then
        if [[ "${CAIRN_SKIP_APT:-}" != 1 ]] && command -v apt-get >/dev/null 2>&1 && _cairn_can_be_root; then
            _cairn_apt_install python3 python3-pip || return 1
            py="$(command -v python3 || true)"
        fi
        if [[ -z "$py" ]] || ! "$py" -m pip --version >/dev/null 2>&1; then
            _cairn_log "need uv, and python3 with pip to install it; see https://docs.astral.sh/uv/"
            return 1
        fi
    fi

    "$py" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' && in_venv=1
    _cairn_log "installing $spec with pip"
    out="$(mktemp)"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
    if ((in_venv)); then
        "$py" -m pip install -q "$spec" >"$out" 2>&1
    else
        # Debian's python3 is "externally managed" (PEP 668); uv is a self-contained binary, so
        # putting it in the user site is harmless, and pip must be told so.
        "$py" -m pip install -q --user "$spec" >"$out" 2>&1 ||
            "$py" -m pip install -q --user --break-system-packages "$spec" >"$out" 2>&1
    fi || {
        cat "$out" >&2
        rm -f "$out"
        return 1
    }
    rm -f "$out"

    if ((in_venv)); then
        bindir="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    else
        bindir="$("$py" -m site --user-base)/bin"
    fi
    _cairn_prepend_path "$bindir"
    if ! _cairn_uv_ok; then
        _cairn_log "uv was installed into $bindir but is not usable from PATH"
        return 1
    fi
}

# `npm ci` in each npm project of the tests whose node_modules is missing or older than its lock.
_cairn_npm_projects() {
    local dir out
    for dir in "$@"; do
        [[ -f "$dir/package-lock.json" ]] || continue
        [[ -d "$dir/node_modules" && "$dir/node_modules" -nt "$dir/package-lock.json" ]] && continue
        if ! command -v npm >/dev/null 2>&1; then
            [[ "${CAIRN_SKIP_APT:-}" != 1 ]] && _cairn_apt_install nodejs npm || {
                _cairn_log "npm is needed for $dir (install Node.js and npm)"
                return 1
            }
        fi
        _cairn_log "npm ci in $dir"
        out="$(mktemp)"
        (cd "$dir" && npm ci --no-audit --no-fund >"$out" 2>&1 && touch node_modules) || {
            cat "$out" >&2
            rm -f "$out"
            return 1
        }
        rm -f "$out"
    done
}

cairn_bootstrap() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    _cairn_debian_packages "$root/scripts/debian-packages.txt" || return 1
    _cairn_install_uv || return 1
    (cd "$root" && uv sync --frozen) || {
        _cairn_log "uv sync --frozen failed"
        return 1
    }
    _cairn_npm_projects "$root/tests/compat/npm"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    cairn_bootstrap
else
    cairn_bootstrap || return 1
fi
