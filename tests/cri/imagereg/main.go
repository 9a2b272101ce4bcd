// imagereg stands in for the registries critest (sigs.k8s.io/cri-tools)
// pulls its test images from, on a host that reaches none: it builds local
// equivalents of those images from the busybox test rootfs, and serves them
// read-only over the registry HTTP API (v2) to the private containerd of
// tests/cri.sh, whose hosts.toml points registry.k8s.io, gcr.io and
// k8s.gcr.io at it. critest pulls by name on purpose (its image tests pull,
// remove and pull again), so an import into containerd alone is not enough:
// containerd's PullImage always asks the registry.
//
//	imagereg build DIR ROOTFS.tar STANDIN   write the images into DIR
//	imagereg serve DIR ADDR PORTFILE        serve DIR on ADDR (port 0: any),
//	                                        the port written to PORTFILE
//
// DIR holds blobs/sha256/<hex> and refs.json ("repository:tag" -> manifest
// digest). The registry host is not part of the key: the images' paths do
// not collide across the three registries (pause:3.9 is the same image on
// registry.k8s.io and k8s.gcr.io, as critest expects).
//
// STANDIN is tests/cri/standin, built static: the nginx, httpd and
// nonewprivs programs of the images that run one.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 5 && os.Args[1] == "build":
		err = build(os.Args[2], os.Args[3], os.Args[4])
	case len(os.Args) == 5 && os.Args[1] == "serve":
		err = serve(os.Args[2], os.Args[3], os.Args[4])
	default:
		err = fmt.Errorf("usage: imagereg build DIR ROOTFS.tar STANDIN | serve DIR ADDR PORTFILE")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagereg: %v\n", err)
		os.Exit(1)
	}
}

// file is one entry of an image's own layer over the rootfs.
type file struct {
	path string
	mode int64 // with the set-user-ID bit where wanted
	data []byte
	dir  bool
}

// image is a test image: the rootfs, a layer of files, a config.
type image struct {
	refs       []string // repository:tag, registry host left out
	files      []file
	cmd        []string
	entrypoint []string
	user       string
	env        []string
	ports      []string
}

// images lists critest v1.37.0's Linux test images (pkg/framework,
// pkg/validate/consts*.go, security_context_linux.go,
// multi_container_linux.go; cri-tools' images/ for how its own are built).
// The digest-pinned test-image-digest@sha256:9700f9a2... cannot be made
// here: its manifest's bytes are not ours. Nor can the image-volume images.
func images(standin []byte) []image {
	web := func(name string) file { return file{path: name, mode: 0o755, data: standin} }
	marker := func(name string) []file { return []file{{path: name, mode: 0o644}} }
	const staging = "k8s-staging-cri-tools/"
	imgs := []image{
		// The default container image: busybox (sh, sleep, top, echo, ls,
		// pgrep, pidof, cat, hostname...).
		{refs: []string{"e2e-test-images/busybox:1.29-2"}, cmd: []string{"sh"}},
		// nginx: a web server on port 80 that looks like nginx's master.
		{refs: []string{"e2e-test-images/nginx:1.14-2"},
			files: []file{{path: "var/run", dir: true, mode: 0o755}, web("usr/sbin/nginx")},
			cmd:   []string{"nginx", "-g", "daemon off;"}, ports: []string{"80/tcp"}},
		// hostnet-nginx: the same on port 12003, for host-network pods.
		{refs: []string{staging + "hostnet-nginx-amd64:latest"},
			files: []file{{path: "var/run", dir: true, mode: 0o755}, web("usr/sbin/nginx")},
			cmd:   []string{"nginx", "-g", "daemon off;"}, env: []string{"PORT=12003"}, ports: []string{"12003/tcp"}},
		{refs: []string{"e2e-test-images/httpd:2.4.39-4"},
			files: []file{web("usr/local/bin/httpd-foreground")},
			cmd:   []string{"httpd-foreground"}, ports: []string{"80/tcp"}},
		{refs: []string{"e2e-test-images/nonewprivs:1.3"},
			files: []file{{path: "usr/local/bin/nonewprivs", mode: 0o4755, data: standin}},
			cmd:   []string{"/usr/local/bin/nonewprivs"}},
		// A pause image under the names critest compares.
		{refs: []string{"pause:3.9"}, entrypoint: []string{"/bin/pause"}},
		// cri-tools' images/image-user: USER only.
		{refs: []string{staging + "test-image-user-uid:latest"}, user: "1002"},
		{refs: []string{staging + "test-image-user-username:latest"}, user: "www-data"},
		{refs: []string{staging + "test-image-user-uid-group:latest"}, user: "1003:1004"},
		{refs: []string{staging + "test-image-user-username-group:latest"}, user: "www-data:1004"},
		// images/image-predefined-group.
		{refs: []string{staging + "test-image-predefined-group:latest"}, user: "1000",
			files: []file{
				{path: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n")},
				{path: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")},
				{path: "home/default-user", dir: true, mode: 0o755},
			}},
		// images/image-test: busybox and an empty file named for the image.
		{refs: []string{staging + "test-image-tags:1", staging + "test-image-tags:2", staging + "test-image-tags:3"},
			files: marker("same-image")},
		{refs: []string{staging + "test-image-tag:test"}, files: marker("test")},
		{refs: []string{staging + "test-image-tag:all"}, files: marker("all")},
	}
	for _, n := range []string{"test-image-1", "test-image-2", "test-image-3", "test-image-latest"} {
		imgs = append(imgs, image{refs: []string{staging + n + ":latest"}, files: marker(n)})
	}
	return imgs
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type store struct{ dir string }

// put writes a blob, returning its descriptor.
func (s store) put(mediaType string, b []byte) (descriptor, error) {
	sum := sha256.Sum256(b)
	d := descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
	p := filepath.Join(s.dir, "blobs", "sha256", hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return d, err
	}
	return d, os.WriteFile(p, b, 0o644)
}

// layer gzips a tarball (no timestamp: the same files, the same digest),
// returning its descriptor and its diff ID.
func (s store) layer(tarball []byte) (descriptor, string, error) {
	var z bytes.Buffer
	w, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	if _, err := w.Write(tarball); err != nil {
		return descriptor{}, "", err
	}
	if err := w.Close(); err != nil {
		return descriptor{}, "", err
	}
	d, err := s.put(mediaLayer, z.Bytes())
	sum := sha256.Sum256(tarball)
	return d, "sha256:" + hex.EncodeToString(sum[:]), err
}

func filesTar(files []file) ([]byte, error) {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	seen := map[string]bool{}
	for _, f := range files {
		// Parents first, as a tar from a real build has them.
		var parents []string
		for d := path.Dir(f.path); d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if !seen[d] {
				seen[d] = true
				if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
					return nil, err
				}
			}
		}
		if f.dir {
			seen[f.path] = true
			if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: f.path + "/", Mode: f.mode}); err != nil {
				return nil, err
			}
			continue
		}
		if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return nil, err
		}
		if _, err := w.Write(f.data); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), w.Close()
}

// Stand-ins for the busybox applets critest runs that Debian's
// busybox-static lacks: pgrep (the execSync timeout test) and ipcs -m (the
// HostIpc tests, which look for a segment's ID in its output).
const (
	pgrep = `#!/bin/sh
# pgrep PATTERN: the PIDs whose command name matches PATTERN (stand-in).
r=1
for d in /proc/[0-9]*; do
	read -r c <"$d/comm" 2>/dev/null || continue
	if echo "$c" | grep -qE -- "$1"; then echo "${d#/proc/}"; r=0; fi
done
exit $r
`
	ipcs = `#!/bin/sh
# ipcs -m: this IPC namespace's shared memory segments (stand-in).
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
tail -n +2 /proc/sysvipc/shm | while read -r key id perms size cpid lpid nattch uid rest; do
	echo "$key $id $uid $perms $size $nattch"
done
`
)

// busybox makes the rootfs of tests/env.sh busybox-tar more like the
// busybox image's: its root directory 0755 (a mktemp directory's 0700
// there), pgrep and ipcs.
func busybox(rootfs []byte) ([]byte, error) {
	var b bytes.Buffer
	r := tar.NewReader(bytes.NewReader(rootfs))
	w := tar.NewWriter(&b)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Name == "./" || h.Name == "." {
			h.Mode = 0o755
		}
		if err := w.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, r); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct{ name, script string }{{"./bin/pgrep", pgrep}, {"./bin/ipcs", ipcs}} {
		name, script := f.name, f.script
		if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(script))}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(w, script); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), w.Close()
}

func build(dir, rootfs, standinPath string) error {
	base, err := os.ReadFile(rootfs)
	if err != nil {
		return err
	}
	if base, err = busybox(base); err != nil {
		return err
	}
	standin, err := os.ReadFile(standinPath)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	s := store{dir}
	baseDesc, baseDiff, err := s.layer(base)
	if err != nil {
		return err
	}
	refs := map[string]descriptor{}
	for _, img := range images(standin) {
		layers := []descriptor{baseDesc}
		diffs := []string{baseDiff}
		if len(img.files) > 0 {
			t, err := filesTar(img.files)
			if err != nil {
				return err
			}
			d, diff, err := s.layer(t)
			if err != nil {
				return err
			}
			layers, diffs = append(layers, d), append(diffs, diff)
		}
		if img.cmd == nil && img.entrypoint == nil {
			img.cmd = []string{"sh"} // busybox's
		}
		ports := map[string]struct{}{}
		for _, p := range img.ports {
			ports[p] = struct{}{}
		}
		cfg := map[string]any{
			"architecture": "amd64",
			"os":           "linux",
			"config": map[string]any{
				"Env":          append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, img.env...),
				"Cmd":          img.cmd,
				"Entrypoint":   img.entrypoint,
				"User":         img.user,
				"ExposedPorts": ports,
				"Labels":       map[string]string{"sysvisor.critest.image": img.refs[0]},
			},
			"rootfs": map[string]any{"type": "layers", "diff_ids": diffs},
		}
		cb, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		cd, err := s.put(mediaConfig, cb)
		if err != nil {
			return err
		}
		mb, err := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": mediaManifest, "config": cd, "layers": layers,
		})
		if err != nil {
			return err
		}
		md, err := s.put(mediaManifest, mb)
		if err != nil {
			return err
		}
		for _, r := range img.refs {
			refs[r] = md
		}
	}
	b, err := json.MarshalIndent(refs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "refs.json"), b, 0o644)
}

func serve(dir, addr, portFile string) error {
	b, err := os.ReadFile(filepath.Join(dir, "refs.json"))
	if err != nil {
		return err
	}
	refs := map[string]descriptor{}
	if err := json.Unmarshal(b, &refs); err != nil {
		return err
	}
	manifests := map[string]descriptor{} // digest -> descriptor
	var names []string
	for r, d := range refs {
		manifests[d.Digest] = d
		names = append(names, r)
	}
	sort.Strings(names)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	if err := os.WriteFile(portFile+".tmp", []byte(port+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(portFile+".tmp", portFile); err != nil {
		return err
	}
	log.Printf("serving %d references on %s", len(names), l.Addr())

	blob := func(w http.ResponseWriter, r *http.Request, d descriptor) {
		hexd, ok := strings.CutPrefix(d.Digest, "sha256:")
		if !ok || strings.ContainsAny(hexd, "/.") {
			notFound(w, "BLOB_UNKNOWN")
			return
		}
		f, err := os.Open(filepath.Join(dir, "blobs", "sha256", hexd))
		if err != nil {
			notFound(w, "BLOB_UNKNOWN")
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", d.MediaType)
		w.Header().Set("Docker-Content-Digest", d.Digest)
		w.Header().Set("Content-Length", fmt.Sprint(st.Size()))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = io.Copy(w, f)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s", r.Method, r.URL)
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "read-only registry", http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		if p == "/v2/" || p == "/v2" {
			return
		}
		if i := strings.LastIndex(p, "/manifests/"); strings.HasPrefix(p, "/v2/") && i > 4 {
			name, ref := p[4:i], p[i+len("/manifests/"):]
			d, ok := refs[name+":"+ref]
			if strings.HasPrefix(ref, "sha256:") {
				d, ok = manifests[ref]
			}
			if !ok {
				notFound(w, "MANIFEST_UNKNOWN")
				return
			}
			blob(w, r, d)
			return
		}
		if i := strings.LastIndex(p, "/blobs/"); strings.HasPrefix(p, "/v2/") && i > 4 {
			blob(w, r, descriptor{MediaType: "application/octet-stream", Digest: p[i+len("/blobs/"):]})
			return
		}
		notFound(w, "NAME_UNKNOWN")
	})
	return http.Serve(l, h)
}

func notFound(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"not in the local test registry"}]}`+"\n", code)
}
