package runtime

import (
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ownDevices gives the container the character and block devices (and
// FIFOs) its spec
// lists (`docker run --device`) as nodes of its own, owned by the spec's
// uid and gid inside the container, as runc makes them without a user
// namespace. In a user namespace runc can only bind the host's node, owned
// by the host's root, which is unmapped there (nobody inside): a node the
// host keeps at 0600 or 0660 (/dev/fuse and /dev/net/tun on some hosts,
// /dev/kvm, a serial port) could not be opened by the container's root.
//
// The nodes are made on a tmpfs of the container's (dir/devices: a tmpfs
// mounted by the host's root, so not nodev, unlike one the container
// mounts) and bound at the devices' paths; the spec's entries for them go,
// so runc does not bind the host's node over them. The engine's device
// cgroup rules (linux.resources.devices) are left as they are: they still
// decide what the container may open. cleanupMounts detaches the tmpfs with
// everything else under dir. FIFOs are made there too; entries whose owner
// is outside the container's range are left to runc.
func ownDevices(s *specs.Spec, dir string, base, size uint32) error {
	if s.Linux == nil || len(s.Linux.Devices) == 0 {
		return nil
	}
	devdir := filepath.Join(dir, "devices")
	mounted := false
	var kept []specs.LinuxDevice
	for i, d := range s.Linux.Devices {
		var typ uint32
		switch d.Type {
		case "c", "u":
			typ = unix.S_IFCHR
		case "b":
			typ = unix.S_IFBLK
		case "p":
			// Runc would bind a host FIFO of that path, which rarely
			// exists; one of the container's own is what runc makes
			// without a user namespace.
			typ = unix.S_IFIFO
		default:
			kept = append(kept, d)
			continue
		}
		uid, gid := uint32(0), uint32(0)
		if d.UID != nil {
			uid = *d.UID
		}
		if d.GID != nil {
			gid = *d.GID
		}
		if uid >= size || gid >= size || !filepath.IsAbs(d.Path) {
			kept = append(kept, d)
			continue
		}
		perm := os.FileMode(0o666) // runc's default for an entry without one
		if d.FileMode != nil {
			perm = d.FileMode.Perm()
		}
		if !mounted {
			if err := os.Mkdir(devdir, 0o711); err != nil && !os.IsExist(err) {
				return err
			}
			if err := unix.Mount("sysvisor-devices", devdir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0711,size=16k"); err != nil {
				return fmt.Errorf("devices: tmpfs at %s: %w", devdir, err)
			}
			mounted = true
			// Nothing made here propagates to the run directory's peers.
			if err := unix.Mount("", devdir, "", unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("devices: make %s private: %w", devdir, err)
			}
		}
		node := filepath.Join(devdir, fmt.Sprint(i))
		if err := unix.Mknod(node, typ, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
			return fmt.Errorf("devices: %s (%s %d:%d): %w", d.Path, d.Type, d.Major, d.Minor, err)
		}
		// After mknod, which the umask trims.
		if err := os.Chmod(node, perm); err != nil {
			return fmt.Errorf("devices: %s: %w", d.Path, err)
		}
		if err := os.Lchown(node, int(base+uid), int(base+gid)); err != nil {
			return fmt.Errorf("devices: %s: %w", d.Path, err)
		}
		// Untyped, as the views: the option makes it a bind.
		s.Mounts = append(s.Mounts, specs.Mount{Destination: d.Path, Source: node, Options: []string{"bind"}})
	}
	s.Linux.Devices = kept
	return nil
}
