// Package guests is qmount's guest catalogue: the definitions of the
// guests (a kernel, the modules and tools its initramfs ships, and the
// filesystems it serves with which driver), the guests built from them,
// and the choice of guest for a mount.
//
// Definitions are guests/NAME/guest.json files (ParseDef, docs/guests.md):
// the shipped ones are embedded in the binary (ShippedDefs); users add
// their own in directories named by --defs or $QMOUNT_GUEST_DEFS
// (LoadDefs, DefDirs).
//
// A built guest lives in <root>/<name>/<arch>/ with a manifest.json
// (initramfs.Manifest) naming its files, and the definition as built
// (guest.json). Roots are searched in order: every directory in
// $QMOUNT_GUESTS (colon-separated), then <dir of the qmount binary>/guests
// (so build/qmount finds build/guests), then <dir of the
// binary>/../share/qmount/guests (Find, Load).
//
// Select picks, from a Catalogue (LoadCatalogue), the built guest that
// serves a filesystem with the driver the user asked for (-t, --guest),
// fastest boot first, and says which guest to build when none is.
package guests
