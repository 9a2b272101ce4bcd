# strict: minimum interception, for build sandboxes and untrusted code.
#
# The container may not change its mount table at all: every call of the
# mount family fails with EPERM, including the tmpfs, overlay and bind mounts
# a plain user-namespaced container could make, and the unmounts that would
# uncover what the runtime masks. No mount is ever performed by sysvisord on
# the container's behalf, so no emulation code runs for it.
#
# sysinfo(2) stays emulated: it only narrows what the container learns (its
# own memory and uptime instead of the host's) and writes nothing but the
# caller's buffer.
version     = 1
description = "locked down: no mounts or unmounts of any kind (EPERM); sysinfo from the container's cgroups"

syscall "sysinfo" {
  action = "emulate"
}

syscall "mount" {
  action = "deny"
  errno  = "EPERM"
}
syscall "umount2" {
  action = "deny"
  errno  = "EPERM"
}
syscall "fsopen" {
  action = "deny"
  errno  = "EPERM"
}
syscall "fspick" {
  action = "deny"
  errno  = "EPERM"
}
syscall "open_tree" {
  action = "deny"
  errno  = "EPERM"
}
syscall "move_mount" {
  action = "deny"
  errno  = "EPERM"
}
syscall "mount_setattr" {
  action = "deny"
  errno  = "EPERM"
}
