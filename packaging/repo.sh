#!/usr/bin/env bash
# Turn built packages into an apt repository and a yum/dnf repository.
#
#   packaging/repo.sh [--key KEYID] [--suite NAME] PACKAGE_DIR OUT_DIR
#
# PACKAGE_DIR holds the .deb and .rpm files (`make packages` puts them in dist/). OUT_DIR gets:
#
#   OUT_DIR/apt/pool/main/*.deb
#   OUT_DIR/apt/dists/SUITE/main/binary-ARCH/Packages{,.gz}   one per architecture found
#   OUT_DIR/apt/dists/SUITE/Release  (+ InRelease and Release.gpg when signed)
#   OUT_DIR/apt/cairn.list            a sources.list line for this repository
#   OUT_DIR/yum/*.rpm, OUT_DIR/yum/repodata/   (+ repomd.xml.asc when signed)
#   OUT_DIR/yum/cairn.repo            a yum/dnf repository definition
#   OUT_DIR/cairn-archive-key.asc     the public key, when signed
#
# Serve OUT_DIR over HTTP, or use it in place through file:// (see docs/install.md). Unsigned
# repositories must be marked trusted: `[trusted=yes]` for apt, `gpgcheck=0` for yum.
#
# --key KEYID   sign with this key from the caller's gpg keyring (InRelease and Release.gpg for
#               apt, repodata/repomd.xml.asc for yum). Without it the repositories are unsigned.
# --suite NAME  apt suite/codename (default: stable)
#
# Needs apt-ftparchive (Debian package apt-utils) and createrepo_c (createrepo-c); gpg to sign.
# Running it again rebuilds OUT_DIR's apt/ and yum/ from scratch.

set -euo pipefail

usage() {
    sed -n '3,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

key=""
suite="stable"
while (($#)); do
    case "$1" in
        --key) key="${2:?--key needs a key id}"; shift 2 ;;
        --suite) suite="${2:?--suite needs a name}"; shift 2 ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) echo "repo.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
(($# == 2)) || usage
src="$(cd "$1" && pwd)"
mkdir -p "$2"
out="$(cd "$2" && pwd)"

shopt -s nullglob
debs=("$src"/*.deb)
rpms=("$src"/*.rpm)
if ((${#debs[@]} == 0 && ${#rpms[@]} == 0)); then
    echo "repo.sh: no .deb or .rpm files in $src" >&2
    exit 1
fi

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "repo.sh: $1 not found (Debian package: $2)" >&2
        exit 1
    }
}

sign_detached() { # file -> file.asc / .gpg
    gpg --batch --yes --local-user "$key" --armor --detach-sign --output "$2" "$1"
}

if [[ -n "$key" ]]; then
    need gpg gpg
    gpg --batch --armor --export "$key" >"$out/cairn-archive-key.asc"
    [[ -s "$out/cairn-archive-key.asc" ]] || { echo "repo.sh: no public key for $key" >&2; exit 1; }
fi

# ------------------------------------------------------------------ apt
if ((${#debs[@]})); then
    need apt-ftparchive apt-utils
    need dpkg-deb dpkg
    apt_dir="$out/apt"
    rm -rf "$apt_dir"
    mkdir -p "$apt_dir/pool/main"
    cp "${debs[@]}" "$apt_dir/pool/main/"

    # Architectures present; "all" packages are listed under each of them.
    mapfile -t arches < <(for deb in "${debs[@]}"; do dpkg-deb -f "$deb" Architecture; done | sort -u | grep -vx all || true)
    ((${#arches[@]})) || arches=(amd64)

    (
        cd "$apt_dir"
        for arch in "${arches[@]}"; do
            dir="dists/$suite/main/binary-$arch"
            mkdir -p "$dir"
            apt-ftparchive --arch "$arch" packages pool/main >"$dir/Packages"
            gzip -9n <"$dir/Packages" >"$dir/Packages.gz"
        done
        apt-ftparchive \
            -o APT::FTPArchive::Release::Origin=cairn \
            -o APT::FTPArchive::Release::Label=cairn \
            -o APT::FTPArchive::Release::Suite="$suite" \
            -o APT::FTPArchive::Release::Codename="$suite" \
            -o APT::FTPArchive::Release::Architectures="${arches[*]}" \
            -o APT::FTPArchive::Release::Components=main \
            -o APT::FTPArchive::Release::Description="cairn packages" \
            release "dists/$suite" >"$apt_dir/Release.tmp"
        mv "$apt_dir/Release.tmp" "dists/$suite/Release"
        if [[ -n "$key" ]]; then
            sign_detached "dists/$suite/Release" "dists/$suite/Release.gpg"
            gpg --batch --yes --local-user "$key" --clearsign --output "dists/$suite/InRelease" "dists/$suite/Release"
        fi
    )
    if [[ -n "$key" ]]; then
        echo "deb [signed-by=/usr/share/keyrings/cairn-archive-keyring.gpg] file://$apt_dir $suite main" >"$apt_dir/cairn.list"
    else
        echo "deb [trusted=yes] file://$apt_dir $suite main" >"$apt_dir/cairn.list"
    fi
    echo "apt repository: $apt_dir (suite $suite, ${arches[*]}; $([[ -n $key ]] && echo "signed by $key" || echo unsigned))"
fi

# ------------------------------------------------------------------ yum / dnf
if ((${#rpms[@]})); then
    need createrepo_c createrepo-c
    yum_dir="$out/yum"
    rm -rf "$yum_dir"
    mkdir -p "$yum_dir"
    cp "${rpms[@]}" "$yum_dir/"
    createrepo_c --quiet --simple-md-filenames "$yum_dir" >/dev/null
    if [[ -n "$key" ]]; then
        sign_detached "$yum_dir/repodata/repomd.xml" "$yum_dir/repodata/repomd.xml.asc"
        gpg_lines="gpgcheck=0
repo_gpgcheck=1
gpgkey=file://$out/cairn-archive-key.asc"
    else
        gpg_lines="gpgcheck=0
repo_gpgcheck=0"
    fi
    cat >"$yum_dir/cairn.repo" <<EOF
[cairn]
name=cairn
baseurl=file://$yum_dir
enabled=1
$gpg_lines
EOF
    echo "yum repository: $yum_dir ($([[ -n $key ]] && echo "metadata signed by $key" || echo unsigned))"
fi
