package enginefs

import (
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// asOwner runs fn with the thread's filesystem IDs set to uid and gid, so
// that what fn creates through the container's overlay is owned by them.
// overlayfs gives a new file its creator's fsuid, and host root (0) is not
// in the idmap of the overlay's upper layer: created as root, the file
// could not be written (EOVERFLOW).
//
// Leaving fsuid 0 drops the filesystem capabilities from the effective
// set; they are raised again from the permitted set, so the engine, host
// root, keeps the access it has on a runc container's files.
//
// fn runs on a thread of its own: fsuid, fsgid and the effective set are
// per thread. If the thread cannot be put back it is not returned to the
// Go scheduler: its goroutine ends locked, and the runtime ends the thread.
func asOwner(uid, gid uint32, fn func() error) syscall.Errno {
	ch := make(chan syscall.Errno, 1)
	go func() {
		runtime.LockOSThread()
		// Set in this order so the restore can always set the gid back
		// (a changed fsuid keeps its capabilities only if raised again).
		setfs(unix.SYS_SETFSGID, int(gid))
		setfs(unix.SYS_SETFSUID, int(uid))
		if setfs(unix.SYS_SETFSUID, -1) != int(uid) || setfs(unix.SYS_SETFSGID, -1) != int(gid) {
			ch <- syscall.EPERM
			restoreIDs()
			return
		}
		if err := raiseEffective(); err != nil {
			ch <- errno(err)
			restoreIDs()
			return
		}
		err := fn()
		ch <- errno(err)
		restoreIDs()
	}()
	return <-ch
}

// setfs calls setfsuid or setfsgid on this thread and returns the ID
// before the call; with -1 it changes nothing, so it reads the ID.
// (x/sys's wrappers drop the returned ID, the only way to see whether
// the call took effect.)
func setfs(nr uintptr, id int) int {
	r, _, _ := unix.RawSyscall(nr, uintptr(id), 0, 0)
	return int(int32(r))
}

// restoreIDs puts fsuid and fsgid back to 0 (the capabilities come back
// with fsuid 0) and unlocks the thread only if that worked.
func restoreIDs() {
	setfs(unix.SYS_SETFSUID, 0)
	setfs(unix.SYS_SETFSGID, 0)
	if setfs(unix.SYS_SETFSUID, -1) == 0 && setfs(unix.SYS_SETFSGID, -1) == 0 {
		if err := raiseEffective(); err == nil {
			runtime.UnlockOSThread()
		}
	}
}

// raiseEffective makes the thread's effective capabilities its permitted
// ones.
func raiseEffective() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Effective = data[0].Permitted
	data[1].Effective = data[1].Permitted
	return unix.Capset(&hdr, &data[0])
}
