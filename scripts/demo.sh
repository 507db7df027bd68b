#!/usr/bin/env bash
# make demo: mounts a built-in sample ext4 image through a real guest VM,
# works in it like on a local disk, unmounts, and checks the image.
set -euo pipefail
cd "$(dirname "$0")/.."
qmount=build/qmount
work=$(mktemp -d "${TMPDIR:-/tmp}/qmount-demo.XXXXXX")
mnt="$work/mnt"
cleanup() {
	"$qmount" unmount "$mnt" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "== making a sample ext4 image (the host does not mount it)"
mkdir -p "$work/seed/docs" "$mnt"
echo "Hello from a Linux filesystem, served by a tiny VM." >"$work/seed/README.txt"
seq 1 1000 >"$work/seed/docs/numbers.txt"
truncate -s 64M "$work/sample.img"
mkfs.ext4 -q -L qmount-demo -d "$work/seed" "$work/sample.img"

echo "== qmount $work/sample.img $mnt"
time "$qmount" "$work/sample.img" "$mnt"

echo "== working in the mount"
ls -la "$mnt"
cat "$mnt/README.txt"
echo "written through qmount at $(date -u +%FT%TZ)" >"$mnt/NEW.txt"
sync -f "$mnt"
df -h "$mnt"
"$qmount" status

echo "== qmount unmount $mnt"
time "$qmount" unmount "$mnt"

echo "== checking the image on the host"
e2fsck -fn "$work/sample.img"
debugfs -R "cat /NEW.txt" "$work/sample.img" 2>/dev/null
echo "demo done: the file written through qmount is in the image, and the image is clean."
