// Package itest holds sysvisord's integration tests: real seccomp
// user-notification filters installed in real child processes, handed to an
// in-process supervisor over the OCI seccomp-listener protocol and answered
// by the real handlers. The tests need root and a cgroup v1 memory
// hierarchy; they skip otherwise (failing instead when SYSVISOR_E2E=required,
// as in CI) and always skip under -short.
package itest
