# default: what every sysvisor container gets unless it asks for another
# policy. Emulates sysinfo(2) and the whole mount family, so that procfs and
# sysfs can be mounted in nested namespaces and the runtime's mounts stay
# where they are.
version     = 1
description = "system container: sysinfo from the container's cgroups, mount emulation with procfs and sysfs"

syscall "sysinfo" {
  action = "emulate"
}

syscall "mount" {
  action = "emulate"
  procfs = true
  sysfs  = true
  stubs  = true
}

syscall "umount2" {
  action = "emulate"
}

# The new mount API answers ENOSYS, so callers fall back to the checked
# mount(2).
syscall "fsopen" {
  action = "emulate"
}
syscall "fspick" {
  action = "emulate"
}
syscall "open_tree" {
  action = "emulate"
}
syscall "move_mount" {
  action = "emulate"
}
syscall "mount_setattr" {
  action = "emulate"
}

# Device nodes: a short allowlist (null, zero, full, random, urandom, tty,
# net/tun, fuse) is created as a bind of the host's node; other devices get
# the kernel's EPERM.
syscall "mknod" {
  action  = "emulate"
  devices = true
}
syscall "mknodat" {
  action  = "emulate"
  devices = true
}

# A filter with a notify listener of its own (a nested sysvisor): refused
# with EBUSY, as the kernel would, and logged. Other filters are not trapped.
syscall "seccomp" {
  action = "emulate"
}
