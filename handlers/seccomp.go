package handlers

import "golang.org/x/sys/unix"

// seccompHandler answers a container that installs a seccomp filter with a
// notify listener of its own (the rule traps only those: catalog's When).
// A filter chain holds one listener, and the container's is sysvisord's:
// the kernel would refuse it with EBUSY too, but silently; a nested
// sysvisor or another notify supervisor in the container is then hard to
// diagnose, so the refusal is logged with the container's name.
type seccompHandler struct{}

func (seccompHandler) Handle(req *Request) Response {
	req.Log.Warn("refused a seccomp filter with its own notify listener: a sysvisor container's listener is sysvisord's, and nested notify supervisors are not supported",
		"flags", req.Arg(1))
	return Fail(unix.EBUSY)
}
