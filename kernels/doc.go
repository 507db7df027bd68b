// Package kernels obtains the kernels qmount's guests boot: Debian's
// packaged kernel (linux-image-<arch>), fetched with the Debian package
// tools (apt-cache, apt-get download, dpkg-deb), never by hand.
//
// Fetch resolves the metapackage to the concrete image package, downloads
// and unpacks it into a cache directory, and prepares what hypervisors boot
// fastest:
//
//   - amd64: the uncompressed vmlinux ELF taken out of the bzImage, checked
//     for the Xen PVH entry note so that QEMU's -M microvm -kernel boots it
//     without firmware or in-guest decompression. The bzImage is kept.
//   - arm64: an uncompressed Image (Virtualization.framework rejects
//     compressed kernels); Debian's is usually one already.
//
// Compressed modules (.ko.xz, .ko.zst, .ko.gz) are decompressed at unpack
// time, since decompressing them inside a TCG guest is many times slower.
//
// Nothing is downloaded twice: a kernel already unpacked in the cache is
// returned as is, and a cached .deb with the right SHA256 is reused.
//
// Build compiles a kernel instead, from Debian's linux-source package:
// tinyconfig plus config fragments (kernels/configs/*.config, and
// X-<arch>.config companions), olddefconfig, a check that every option the
// fragments set survived, then make (niced, in a per-guest object
// directory under the cache so that changes rebuild incrementally). The
// result has the same shape as a fetched kernel, without modules.
package kernels
