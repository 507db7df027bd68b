// Package initramfs builds a guest's initramfs: a newc cpio archive, made
// in Go without privileges (device nodes are plain records), holding
//
//   - /init, the static guest init binary the caller names;
//   - /dev/console (c 5 1) and /dev/null (c 1 3), and the usual top
//     directories;
//   - the requested kernel modules with the closure of their dependencies,
//     resolved from each module's .modinfo (depends= and softdep= pre:/post:,
//     softdeps naming aliases such as crypto-crc32c resolved through the
//     modules' aliases), under /lib/modules/<release>/ with a depmod-format
//     modules.dep (pre-softdeps folded in, see WriteModulesDep),
//     modules.softdep, modules.alias and the kernel's modules.builtin, so
//     that u-root's pkg/kmodule loads any of them by name;
//   - optional tools with their ELF interpreter and shared libraries
//     (DT_NEEDED, RUNPATH), taken from the host or from a sysroot, at their
//     usual paths.
//
// The archive is written uncompressed and reproducibly (zero mtimes,
// sequential inode numbers, stable order), so equal inputs give equal
// bytes.
package initramfs
