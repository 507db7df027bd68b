#!/usr/bin/env bash
# Installs the Debian packages qmount's build, tests and benchmarks need,
# only those that are missing. Safe to run repeatedly. Needs root (or sudo).
set -euo pipefail

set_name=${1:-test}

# The guests take their tools (cryptsetup, lvm, mdadm, btrfs, ntfs-3g,
# busybox, mke2fs, blkid) from this host for its own architecture; for the
# other one qmount-build fetches the same packages with apt-get download.
base=(
	qemu-system-x86 qemu-system-arm qemu-utils fuse3 cpio xz-utils zstd
	e2fsprogs btrfs-progs xfsprogs dosfstools exfatprogs f2fs-tools jfsutils
	nilfs-tools genisoimage squashfs-tools udftools mtools attr util-linux
	ntfs-3g hfsutils erofs-utils reiserfsprogs cryptsetup-bin lvm2 dmsetup mdadm xorriso
	busybox-static
	fdisk dpkg-dev binutils bzip2 gzip
	build-essential bc bison flex libelf-dev libssl-dev gcc-aarch64-linux-gnu
)
bench=(fio libguestfs-tools fuse2fs linux-image-amd64)

case "$set_name" in
test) want=("${base[@]}") ;;
bench) want=("${base[@]}" "${bench[@]}") ;;
*) echo "install-deps: unknown set $set_name (test or bench)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
