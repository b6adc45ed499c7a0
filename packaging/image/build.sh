#!/usr/bin/env bash
# Build cairn's OCI container image from Debian's packages, without a container engine.
#
#   packaging/image/build.sh [--rootfs-tarball TGZ] [--mirror URL] [--work DIR] [--tag NAME] DEB OUT
#
# 1. A Debian 12 root: debootstrap (minbase with python3.11 and adduser, what the deb needs) from
#    --mirror (default http://deb.debian.org/debian), or an existing root tarball (--rootfs-tarball).
# 2. The cairn deb installed into it with chroot (dpkg -i; a policy-rc.d keeps services stopped),
#    apt's caches and lists removed, the packaged single-server /etc/cairn.d/cairn.hcl moved to
#    /usr/share/doc/cairn/ and replaced by image.hcl (leave_on_terminate: SIGTERM is a graceful
#    leave, which is what a container stop means).
# 3. buildah (storage under --work, vfs driver, so no daemon and no system configuration) makes an
#    image of that root: user cairn, `cairn agent -data-dir=/var/lib/cairn -config-dir=/etc/cairn.d`
#    as entrypoint taking further flags (default command: -dev -client=0.0.0.0), volume
#    /var/lib/cairn, Consul's ports, stop signal SIGTERM, OCI labels; committed as --tag (default
#    localhost/cairn:VERSION) in that storage and written to OUT as an oci-archive.
#
# Load it with `podman load -i OUT` or `skopeo copy oci-archive:OUT docker://REGISTRY/cairn:TAG`.
# Needs root (chroot, dpkg), buildah, and debootstrap unless --rootfs-tarball is given.

set -euo pipefail

usage() {
    sed -n '3,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

ROOTFS_TARBALL=""
MIRROR="${CAIRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="build/image"
TAG=""
while (($#)); do
    case "$1" in
        --rootfs-tarball) ROOTFS_TARBALL="$2"; shift 2 ;;
        --mirror) MIRROR="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        -h|--help) usage ;;
        --*) echo "build.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
(($# == 2)) || usage
DEB="$1"
OUT="$2"

die() { echo "build.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (chroot and dpkg into the image's root)"
[[ -f "$DEB" ]] || die "no such deb: $DEB (make deb builds it)"
command -v buildah >/dev/null || die "buildah is not installed (Debian package buildah)"
[[ -n "$ROOTFS_TARBALL" ]] || command -v debootstrap >/dev/null \
    || die "debootstrap is not installed (Debian package debootstrap); or pass --rootfs-tarball"

VERSION=$(dpkg-deb -f "$DEB" Version)
ARCH=$(dpkg-deb -f "$DEB" Architecture)
TAG=${TAG:-localhost/cairn:$VERSION}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
ROOT="$WORK/rootfs"
BUILDAH=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)

rm -rf "$ROOT"
mkdir -p "$ROOT"
if [[ -n "$ROOTFS_TARBALL" ]]; then
    tar -C "$ROOT" -xzf "$ROOTFS_TARBALL"
else
    debootstrap --variant=minbase --include=python3.11,adduser bookworm "$ROOT" "$MIRROR"
fi

# The package, installed as apt would, with services kept stopped.
cp "$DEB" "$ROOT/tmp/cairn.deb"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/cairn.deb
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/tmp/cairn.deb"

# The image's configuration: no single-server default, a graceful leave on SIGTERM.
mkdir -p "$ROOT/usr/share/doc/cairn"
if [[ -f "$ROOT/etc/cairn.d/cairn.hcl" ]]; then
    mv "$ROOT/etc/cairn.d/cairn.hcl" "$ROOT/usr/share/doc/cairn/cairn.hcl.example"
fi
cat >"$ROOT/etc/cairn.d/image.hcl" <<'EOF'
# cairn container image defaults. Add settings with further files in /etc/cairn.d (a volume or a
# bind mount) or with flags after the image name: `podman run IMAGE -server -bootstrap-expect 3 ...`.

# A container is stopped with SIGTERM: leave the cluster gracefully, servers included.
leave_on_terminate = true
EOF
chroot "$ROOT" chown -R root:cairn /etc/cairn.d
chmod 0750 "$ROOT/etc/cairn.d"
chmod 0640 "$ROOT/etc/cairn.d/image.hcl"
chroot "$ROOT" install -d -o cairn -g cairn -m 0750 /var/lib/cairn

# Smaller: no package caches, lists, logs or documentation beyond cairn's.
rm -rf "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*
find "$ROOT/usr/share/doc" -mindepth 1 -maxdepth 1 ! -name cairn -exec rm -rf {} +

# The image.
"${BUILDAH[@]}" rmi -f "$TAG" >/dev/null 2>&1 || true
ctr=$("${BUILDAH[@]}" from --name "cairn-image-$$" scratch)
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
# Copied through the container's mount point with owners and modes kept (buildah copy would
# make every file root's, and the cairn user could not write /var/lib/cairn).
mnt=$("${BUILDAH[@]}" mount "$ctr")
tar -C "$ROOT" -cf - . | tar -C "$mnt" -xpf - --numeric-owner
"${BUILDAH[@]}" umount "$ctr" >/dev/null
config=(
    --arch "$ARCH" --os linux
    --user cairn:cairn
    --workingdir /var/lib/cairn
    --entrypoint '["/usr/bin/cairn", "agent", "-data-dir=/var/lib/cairn", "-config-dir=/etc/cairn.d"]'
    --cmd '["-dev", "-client=0.0.0.0"]'
    --volume /var/lib/cairn
    --stop-signal SIGTERM
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --env LANG=C.UTF-8
    --label org.opencontainers.image.title=cairn
    --label "org.opencontainers.image.description=Consul-compatible service discovery agent"
    --label "org.opencontainers.image.version=$VERSION"
    --label org.opencontainers.image.licenses=MPL-2.0
)
for port in 8300/tcp 8301/tcp 8301/udp 8302/tcp 8302/udp 8500/tcp 8600/tcp 8600/udp; do
    config+=(--port "$port")
done
"${BUILDAH[@]}" config "${config[@]}" "$ctr"
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
"${BUILDAH[@]}" commit --quiet --format oci --rm "$ctr" "$TAG" >/dev/null
trap - EXIT
"${BUILDAH[@]}" push --quiet "$TAG" "oci-archive:$OUT:$TAG"
echo "built $TAG -> $OUT"
