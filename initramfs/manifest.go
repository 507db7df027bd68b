package initramfs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ManifestName is the manifest's file name in a built guest's directory
// (build/guests/<name>/<arch>/manifest.json).
const ManifestName = "manifest.json"

// Manifest describes a built guest: what its files are and where they came
// from. File names are relative to the manifest's directory.
type Manifest struct {
	Name  string    `json:"name"` // guest name, e.g. "linux"
	Arch  string    `json:"arch"` // GOARCH
	Built time.Time `json:"built"`
	// Inputs is a digest of everything the build used; a rebuild with the
	// same digest is skipped.
	Inputs string `json:"inputs"`

	Kernel    KernelInfo    `json:"kernel"`
	Initramfs InitramfsInfo `json:"initramfs"`
	Init      FileInfo      `json:"init"`
}

// KernelInfo describes the guest's kernel.
type KernelInfo struct {
	Package        string `json:"package"`         // Debian package
	PackageVersion string `json:"package_version"` // Debian version
	Release        string `json:"release"`         // uname -r
	// Format is "vmlinux-pvh" or "arm64-image".
	Format   string `json:"format"`
	PVHEntry uint64 `json:"pvh_entry,omitempty"`
	FileInfo        // the bootable image (vmlinux or Image)
	// Compressed is the kernel as shipped (bzImage), when kept.
	Compressed *FileInfo `json:"compressed,omitempty"`
	Config     string    `json:"config,omitempty"` // the kernel's config file
}

// InitramfsInfo describes the guest's initramfs.
type InitramfsInfo struct {
	FileInfo
	Compression string   `json:"compression"` // "none"
	Release     string   `json:"release,omitempty"`
	Modules     []string `json:"modules"` // shipped, in load order
	Builtin     []string `json:"builtin,omitempty"`
	Missing     []string `json:"missing,omitempty"`
	Tools       []string `json:"tools,omitempty"`
	Records     int      `json:"records"`
}

// FileInfo names one file with its size and digest.
type FileInfo struct {
	File   string `json:"file,omitempty"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Describe returns the FileInfo of the file at path, named by its base name.
func Describe(path string) (FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return FileInfo{}, fmt.Errorf("hashing %s: %w", path, err)
	}
	return FileInfo{File: filepath.Base(path), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// ReadManifest reads dir/manifest.json.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", ManifestName, err)
	}
	return &m, nil
}

// WriteManifest writes m to dir/manifest.json atomically.
func WriteManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, ManifestName)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
