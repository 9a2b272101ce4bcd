# dind: Docker (or containerd, or podman) inside the container. Today the
# same as default: inner runtimes need procfs and sysfs for their containers,
# tmpfs, overlay and bind mounts, and pivot_root; mount emulation gives them
# all of it. It will diverge as the dind-specific emulation lands.
version     = 1
description = "inner Docker: same as default for now (procfs and sysfs for inner containers, tmpfs, overlay and bind mounts)"

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
