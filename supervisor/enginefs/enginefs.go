// Package enginefs serves the engine's view of running system containers:
// one FUSE mount for all containers, a directory per container that
// sysvisord binds at the engine's rootfs path (…/overlay2/<id>/merged).
//
// The engine (dockerd: docker cp in and out, export) works on that path as
// host root and expects on-disk ownership, the way it sees a runc
// container. The container's own overlay shows host IDs base+u, and host
// root cannot create files through it (its ID is outside the overlay's
// idmapped upper: EOVERFLOW). This server passes every operation through
// to the container's overlay and translates IDs both ways: base+u ↔ u in
// attributes and chown, and files are created with fsuid base+uid of the
// caller. Every path is resolved inside the container's root
// (openat2 RESOLVE_IN_ROOT) and final components are never followed: the
// tree is the container's, and the container can change it under us.
package enginefs

import (
	"github.com/hashicorp/go-hclog"
)

// FSName is the mount's source and subtype: mountinfo shows the mount and
// its binds as fstype "fuse.sysvisor-engine".
const FSName = "sysvisor-engine"

// FSType is the fstype mountinfo gives the mount and every bind of it.
const FSType = "fuse." + FSName

// Server is the one mount.
type Server struct {
	impl
}

// Mount mounts the server at dir (made 0700 if missing; a stale mount of
// an earlier sysvisord left there is detached first) and serves it until
// Unmount.
func Mount(dir string, log hclog.Logger) (*Server, error) { return mount(dir, log) }

// Add serves the container id's tree: rootfs is its overlay on the host
// (containers/<id>/rootfs), base the first host ID of its range (disk 0).
// It returns the directory to bind at the engine's path. Adding an id
// again replaces its tree.
func (s *Server) Add(id, rootfs string, base uint32) (string, error) { return s.add(id, rootfs, base) }

// Remove stops serving id: operations on its tree fail with ESTALE.
func (s *Server) Remove(id string) { s.remove(id) }

// Dir is the mount point.
func (s *Server) Dir() string { return s.dir }

// Unmount stops serving and unmounts (lazily: binds at engine paths go
// with it).
func (s *Server) Unmount() error { return s.unmount() }
