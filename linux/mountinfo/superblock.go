package mountinfo

import "golang.org/x/sys/unix"

// SuperblockAlive reports whether a filesystem with device number
// major:minor is mounted anywhere on the host, in any mount namespace: a
// superblock lives while any mount of it does (in a namespace only an fd
// holds, lazily detached, under another root), and mountinfo's major:minor
// is its device number. ustat(2) looks the superblock up by that number
// among all of the kernel's, so no mount table has to be walked.
//
// It answers true whenever it cannot tell (no ustat on this architecture,
// any error but EINVAL, a number ustat cannot encode): callers only drop
// what is dead.
func SuperblockAlive(major, minor uint32) bool {
	if major >= 1<<12 || minor >= 1<<20 {
		return true // outside the 32-bit encoding ustat takes
	}
	return ustatAlive(uint32(unix.Mkdev(major, minor)))
}
