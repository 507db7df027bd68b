package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The storage tests run the real qmount binary on LUKS, LVM and RAID
// images. The host kernel may lack device-mapper and md, so the images
// are made inside the linux-storage guest with `qmount shell -c`.

// needStorageVM skips unless the linux-storage guest can be booted.
func needStorageVM(t *testing.T) {
	t.Helper()
	needVM(t)
	need(t, "cryptsetup")
	if _, err := os.Stat(filepath.Join(guestsDir(), "linux-storage", "amd64", "manifest.json")); err != nil {
		t.Skipf("linux-storage guest not built in %s: run make guests", guestsDir())
	}
}

// runIn runs qmount with extra environment and stdin.
func (e *env) runIn(extraEnv []string, stdin string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(qmountBin, args...)
	cmd.Env = append(e.environ(), extraEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running qmount %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// shell runs script in the storage guest with disks attached (stdin on
// the script's stdin) and fails unless it exits 0.
func (e *env) shell(stdin, script string, disks ...string) string {
	e.t.Helper()
	r := e.runIn(nil, stdin, append([]string{"shell", "-c", "set -e\n" + script}, disks...)...)
	if r.code != 0 {
		e.t.Fatalf("qmount shell: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (e *env) sparse(name string, mib int64) string {
	e.t.Helper()
	p := filepath.Join(e.work, name)
	f, err := os.Create(p)
	if err != nil {
		e.t.Fatal(err)
	}
	f.Truncate(mib << 20)
	f.Close()
	return p
}

// noSecret fails if secret shows in a process' command line or
// environment, the newest mount's logs (supervisor and guest console) or
// text.
func (e *env) noSecret(secret string, texts ...string) {
	e.t.Helper()
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		for _, f := range []string{"cmdline", "environ"} {
			if b, _ := os.ReadFile(filepath.Join(p, f)); bytes.Contains(b, []byte(secret)) {
				if p == "/proc/"+itoa(os.Getpid()) {
					continue
				}
				e.t.Errorf("the passphrase is in %s/%s: %q", p, f, b)
			}
		}
	}
	logs := e.run("log").stdout
	for _, s := range append(texts, logs) {
		if strings.Contains(s, secret) {
			e.t.Errorf("the passphrase shows in qmount's output or logs")
		}
	}
	ents, _ := filepath.Glob(filepath.Join(e.stateDir, "logs", "*"))
	for _, f := range ents {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte(secret)) {
			e.t.Errorf("the passphrase is in %s", f)
		}
	}
}

// supervisors lists running supervisors of this test's qmount binary.
func supervisors() []string {
	var out []string
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if bytes.HasPrefix(b, []byte(qmountBin+"\x00"+superviseCommand)) {
			out = append(out, p)
		}
	}
	return out
}

// TestShellExitCode: qmount shell -c exits with the command's status.
func TestShellExitCode(t *testing.T) {
	needStorageVM(t)
	e := newEnv(t)
	img := e.sparse("d.img", 8)
	r := e.run("shell", "-c", "echo hi; exit 3", img)
	if r.code != 3 || strings.TrimSpace(r.stdout) != "hi" || strings.Contains(r.stderr, "qmount:") {
		t.Errorf("shell -c 'exit 3': exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestMountLUKS2: a LUKS2 image mounted with the passphrase from
// QMOUNT_PASSPHRASE, then from --key-file; a wrong one fails with exit 1
// and leaves nothing running; the passphrase never shows in a process'
// command line or environment, a log or the console; list -d shows the
// filesystem inside.
func TestMountLUKS2(t *testing.T) {
	needStorageVM(t)
	e := newEnv(t)
	const pass = "luks2 e2e passphrase Zq9"
	img := e.sparse("luks.img", 64)
	fmtCmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--key-file=-", "--type", "luks2",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", img)
	fmtCmd.Stdin = strings.NewReader(pass)
	if out, err := fmtCmd.CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	e.shell(pass, `cryptsetup open --key-file=- /dev/disk/qmount/qmount0 c
/usr/sbin/mke2fs -q -t ext4 -L VAULT /dev/mapper/c
cryptsetup close c`, img)

	// QMOUNT_PASSPHRASE.
	mp := filepath.Join(e.work, "mp")
	r := e.runIn([]string{"QMOUNT_PASSPHRASE=" + pass}, "", img, mp)
	if r.code != 0 {
		t.Fatalf("mount: exit %d\n%s%s", r.code, r.stderr, e.lastLog())
	}
	st := e.statusOf(mp)
	if st.Guest != "linux-storage" || st.FSType != "ext4" || st.ReadOnly {
		t.Errorf("status %+v", st)
	}
	e.noSecret(pass, r.stdout, r.stderr) // during the mount
	if err := os.WriteFile(filepath.Join(mp, "secret.txt"), []byte("inside luks2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustRun("unmount", mp)
	e.assertNothingLeft()

	// --key-file, read-only: the file is there.
	key := filepath.Join(e.work, "key")
	os.WriteFile(key, []byte(pass+"\n"), 0o600)
	r = e.runIn(nil, "", "--ro", "--key-file", key, img, mp)
	if r.code != 0 {
		t.Fatalf("mount --key-file: exit %d\n%s%s", r.code, r.stderr, e.lastLog())
	}
	if b, err := os.ReadFile(filepath.Join(mp, "secret.txt")); err != nil || string(b) != "inside luks2\n" {
		t.Errorf("secret.txt after a remount: %q, %v", b, err)
	}
	e.noSecret(pass, r.stdout, r.stderr)
	e.mustRun("unmount", mp)

	// A wrong passphrase: exit 1, one clear line, nothing left running.
	r = e.runIn([]string{"QMOUNT_PASSPHRASE=not the one"}, "", img, mp)
	oneErrorLine(t, r, "wrong passphrase for "+img)
	e.assertNothingLeft()
	if s := supervisors(); len(s) != 0 {
		t.Errorf("supervisors left running: %v", s)
	}
	if isMountPoint(mp) {
		t.Errorf("%s is still mounted", mp)
	}
	e.noSecret("not the one")
	// No passphrase and no terminal: says how to give one.
	r = e.runIn(nil, "", img, mp)
	oneErrorLine(t, r, "QMOUNT_PASSPHRASE")
	e.assertNothingLeft()

	// list -d shows the filesystem inside.
	r = e.runIn([]string{"QMOUNT_PASSPHRASE=" + pass}, "", "list", "-d", img)
	if r.code != 0 || !strings.Contains(r.stdout, "crypto_LUKS") || !strings.Contains(r.stdout, "ext4") || !strings.Contains(r.stdout, "VAULT") {
		t.Errorf("list -d: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	e.noSecret(pass, r.stdout, r.stderr)
}

func isMountPoint(p string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

// TestMountLVM: lvm:VG:DISK:LV mounts the named LV of a VG with two.
func TestMountLVM(t *testing.T) {
	needStorageVM(t)
	e := newEnv(t)
	img := e.sparse("pv.img", 64)
	e.shell("", `d=/dev/disk/qmount/qmount0
lvm pvcreate -q $d
lvm vgcreate -q vg0 $d
lvm lvcreate -q -L 16M -n alpha vg0
lvm lvcreate -q -L 16M -n beta vg0
/usr/sbin/mke2fs -q -t ext4 -L ALPHA /dev/mapper/vg0-alpha
/usr/sbin/mke2fs -q -t ext4 -L BETA /dev/mapper/vg0-beta
lvm vgchange -q -an vg0`, img)

	if out := e.mustRun("list", img).stdout; !strings.Contains(out, "lvm:vg0:"+img+":beta") {
		t.Errorf("list does not show the LV identifier:\n%s", out)
	}
	r := e.run("lvm:vg0:" + img + ":gamma")
	oneErrorLine(t, r, "has no logical volume gamma (it has: alpha, beta)")

	r = e.mustRun("lvm:vg0:" + img + ":beta")
	mp := strings.TrimSpace(r.stdout)
	if filepath.Base(mp) != "beta" {
		t.Errorf("mount point %s, want one named after the LV", mp)
	}
	if err := os.WriteFile(filepath.Join(mp, "hello.txt"), []byte("in beta\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustRun("unmount", mp)
	e.assertNothingLeft()

	mp2 := filepath.Join(e.work, "mp")
	e.mustRun("--ro", "lvm:vg0:"+img+":beta", mp2)
	if b, err := os.ReadFile(filepath.Join(mp2, "hello.txt")); err != nil || string(b) != "in beta\n" {
		t.Errorf("hello.txt on remount: %q, %v", b, err)
	}
	e.mustRun("unmount", mp2)
	e.mustRun("--ro", "lvm:vg0:"+img+":alpha", mp2)
	if _, err := os.Stat(filepath.Join(mp2, "hello.txt")); err == nil {
		t.Error("the other LV has the file")
	}
	e.mustRun("unmount", mp2)
	e.assertNothingLeft()
}

// TestMountRAID: raid:A:B mounts an md RAID1; with one disk missing
// (raid:B) it is still readable, read-only.
func TestMountRAID(t *testing.T) {
	needStorageVM(t)
	e := newEnv(t)
	a, b := e.sparse("a.img", 48), e.sparse("b.img", 48)
	e.shell("", `mdadm --create -q /dev/md0 --level=1 --raid-devices=2 --metadata=1.2 --assume-clean --run /dev/disk/qmount/qmount0 /dev/disk/qmount/qmount1
/usr/sbin/mke2fs -q -t ext4 /dev/md0
mdadm --stop /dev/md0`, a, b)

	mp := filepath.Join(e.work, "mp")
	e.mustRun("raid:"+a+":"+b, mp)
	st := e.statusOf(mp)
	if len(st.Disks) != 2 || st.ReadOnly || st.Guest != "linux-storage" {
		t.Errorf("status %+v", st)
	}
	if err := os.WriteFile(filepath.Join(mp, "mirrored.txt"), []byte("both halves\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustRun("unmount", mp)
	e.assertNothingLeft()

	r := e.mustRun("raid:"+b, mp)
	if !strings.Contains(r.stderr, "degraded, read-only") {
		t.Errorf("no word about the missing disk: %s", r.stderr)
	}
	if st := e.statusOf(mp); !st.ReadOnly {
		t.Errorf("degraded array mounted read-write: %+v", st)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "mirrored.txt")); err != nil || string(got) != "both halves\n" {
		t.Errorf("mirrored.txt from one disk: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "x"), nil, 0o644); err == nil {
		t.Error("wrote to a degraded read-only array")
	}
	e.mustRun("unmount", mp)
	e.assertNothingLeft()
}

// TestMountLUKS2Argon2: an argon2id key slot raises the guest's memory,
// saying so.
func TestMountLUKS2Argon2(t *testing.T) {
	needStorageVM(t)
	e := newEnv(t)
	const pass = "argon2 pass"
	img := e.sparse("argon.img", 32)
	fmtCmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--key-file=-", "--type", "luks2",
		"--pbkdf", "argon2id", "--pbkdf-memory", "262144", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1", img)
	fmtCmd.Stdin = strings.NewReader(pass)
	if out, err := fmtCmd.CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	e.runIn(nil, pass, "shell", "--memory", "1024", "-c", "cryptsetup open --key-file=- /dev/disk/qmount/qmount0 c && /usr/sbin/mke2fs -q -t ext4 /dev/mapper/c && cryptsetup close c", img)
	mp := filepath.Join(e.work, "mp")
	r := e.runIn([]string{"QMOUNT_PASSPHRASE=" + pass}, "", img, mp)
	if r.code != 0 {
		t.Fatalf("mount: exit %d\n%s%s", r.code, r.stderr, e.lastLog())
	}
	if !strings.Contains(r.stderr, "argon2id with 256 MiB of memory: guest memory raised from 512 to 768 MiB") {
		t.Errorf("no word about the memory: %s", r.stderr)
	}
	e.mustRun("unmount", mp)
	e.assertNothingLeft()
}

// TestMountMultiDiskAndFormats: DISK:DISK mounts a btrfs RAID1 over two
// disks; a qcow2 image is found by its content (whatever its name) and
// mounted read-write; an image file without write permission is mounted
// read-only, saying so.
func TestMountMultiDiskAndFormats(t *testing.T) {
	needStorageVM(t)
	need(t, "mkfs.btrfs", "qemu-img")
	e := newEnv(t)
	a, b := e.sparse("a.img", 128), e.sparse("b.img", 128)
	if out, err := exec.Command("mkfs.btrfs", "-q", "-L", "pair", "-d", "raid1", "-m", "raid1", a, b).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v\n%s", err, out)
	}
	r := e.mustRun(a + ":" + b)
	mp := strings.TrimSpace(r.stdout)
	if st := e.statusOf(mp); st.FSType != "btrfs" || len(st.Disks) != 2 || filepath.Base(mp) != "pair" {
		t.Errorf("status %+v", st)
	}
	os.WriteFile(filepath.Join(mp, "both.txt"), []byte("on two disks\n"), 0o644)
	e.mustRun("unmount", mp)
	e.assertNothingLeft()
	if out, err := exec.Command("btrfs", "check", "--readonly", a).CombinedOutput(); err != nil {
		t.Errorf("btrfs check: %v\n%s", err, out)
	}

	// qcow2, named .raw: the format comes from the magic.
	q := filepath.Join(e.work, "disk.raw")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", q, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	e.shell("", "/usr/sbin/mke2fs -q -t ext4 -L QC /dev/disk/qmount/qmount0", q)
	mp = filepath.Join(e.work, "mq")
	e.mustRun(q, mp)
	os.WriteFile(filepath.Join(mp, "q.txt"), []byte("qcow2\n"), 0o644)
	e.mustRun("unmount", mp)
	raw := filepath.Join(e.work, "conv.img")
	if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", q, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if got := catImage(t, raw, "/q.txt"); got != "qcow2\n" {
		t.Errorf("q.txt in the qcow2 image: %q", got)
	}

	// A read-only image file stays read-only.
	os.Chmod(raw, 0o444)
	r = e.mustRun(raw, mp)
	if !strings.Contains(r.stderr, "not writable: mounting read-only") || !e.statusOf(mp).ReadOnly {
		t.Errorf("read-only image: %s %+v", r.stderr, e.statusOf(mp))
	}
	e.mustRun("unmount", mp)
	e.assertNothingLeft()
}

// TestMountLUKS2Terminal: on a terminal the passphrase is asked without
// echo; a wrong one says so and asks again, up to three tries.
func TestMountLUKS2Terminal(t *testing.T) {
	needStorageVM(t)
	need(t, "script")
	e := newEnv(t)
	const pass = "typed at the prompt"
	img := e.sparse("luks.img", 32)
	fmtCmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--key-file=-", "--type", "luks1",
		"--pbkdf-force-iterations", "1000", img)
	fmtCmd.Stdin = strings.NewReader(pass)
	if out, err := fmtCmd.CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	e.shell(pass, "cryptsetup open --key-file=- /dev/disk/qmount/qmount0 c && /usr/sbin/mke2fs -q -t ext4 /dev/mapper/c && cryptsetup close c", img)
	mp := filepath.Join(e.work, "mp")

	// script(1) gives qmount a terminal; each prompt is answered as it
	// appears: two wrong passphrases, then the right one.
	cmd := exec.Command("script", "-qec", qmountBin+" "+img+" "+mp, "/dev/null")
	cmd.Env = e.environ()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = outW, outW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	answers := []string{"wrong one\n", "wrong two\n", pass + "\n"}
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	prompts := 0
	for {
		n, err := outR.Read(buf)
		seen.Write(buf[:n])
		if c := strings.Count(seen.String(), "Passphrase for "+img); c > prompts && prompts < len(answers) {
			in.Write([]byte(answers[prompts]))
			prompts = c
		}
		if err != nil {
			break
		}
	}
	in.Close()
	cmd.Wait()
	out := seen.String()
	if prompts != 3 || strings.Count(out, "Wrong passphrase.") != 2 || !strings.Contains(out, mp) {
		t.Fatalf("%d prompts; output:\n%s%s", prompts, out, e.lastLog())
	}
	if strings.Contains(out, pass) || strings.Contains(out, "wrong one") {
		t.Errorf("the passphrase was echoed:\n%s", out)
	}
	if st := e.statusOf(mp); st.State != "mounted" {
		t.Errorf("status %+v", st)
	}
	e.mustRun("unmount", mp)
	e.assertNothingLeft()
}
