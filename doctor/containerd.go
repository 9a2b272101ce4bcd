package doctor

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The CRI plugin's runtime tables, by config version: containerd 1.x
// (version = 2) and 2.x (version = 3). A section written for one is
// ignored by the other without a word (a peer's installer broke that way).
const (
	criRuntimesV1 = `plugins.cri.containerd.runtimes`
	criRuntimesV2 = `plugins."io.containerd.grpc.v1.cri".containerd.runtimes`
	criRuntimesV3 = `plugins."io.containerd.cri.v1.runtime".containerd.runtimes`
)

// runcShimV2 is the runtime type sysvisor-runc runs under: containerd's runc
// shim, which calls the binary BinaryName names.
const runcShimV2 = "io.containerd.runc.v2"

// ContainerdMajor reads the major version from `containerd --version`
// ("containerd github.com/containerd/containerd 1.6.20~ds1", "containerd
// containerd.io v2.0.2 ..."); 0 when unknown.
func ContainerdMajor(versionOutput string) int {
	m := regexp.MustCompile(`(?:^|\s)v?(\d+)\.\d+`).FindStringSubmatch(versionOutput)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// ContainerdRegistration judges containerd's config for a CRI runtime
// handler that runs sysvisor-runc: in the section the config's version
// reads, under the runc v2 shim, with a BinaryName that exists. major is
// the installed containerd's major version (0: unknown). exists says
// whether a path exists and is executable.
func ContainerdRegistration(path string, b []byte, readErr error, major int, exists func(string) error) Result {
	const check = "containerd registration"
	if readErr != nil {
		if errors.Is(readErr, errNotExist) {
			return warn(check, path+" does not exist", "for Kubernetes, add a runtime handler (docs/kubernetes.md); Docker users can ignore this")
		}
		return fail(check, readErr.Error(), "")
	}
	var cfg map[string]any
	md, err := toml.Decode(string(b), &cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fail(check, fmt.Sprintf("%s:%d:%d: %s", path, pe.Position.Line, pe.Position.Col, pe.Message), "containerd will not start with this file")
		}
		return fail(check, fmt.Sprintf("%s: %v", path, err), "containerd will not start with this file")
	}
	version := int64(1)
	if v, ok := cfg["version"].(int64); ok {
		version = v
	} else if md.IsDefined("version") {
		return fail(check, fmt.Sprintf("%s: version is not a number", path), "")
	}
	read, other := criRuntimesV2, criRuntimesV3
	switch {
	case version >= 3:
		read, other = criRuntimesV3, criRuntimesV2
	case version < 2:
		// containerd 1.x's old format: a file without version reads so.
		read, other = criRuntimesV1, criRuntimesV2
	}
	if version == 3 && major == 1 {
		return fail(check, fmt.Sprintf("%s: version = 3 is containerd 2.x's format; the installed containerd 1.x cannot read it", path),
			"write the file as version = 2 with the handler under "+criRuntimesV2)
	}
	if version < 2 && major >= 2 {
		return fail(check, fmt.Sprintf("%s: config version %d (or none): containerd 2.x reads versions 2 and 3 only", path, version),
			"write version = 3 with the handler under "+criRuntimesV3+" (docs/kubernetes.md)")
	}
	handlers := sysvisorHandlers(cfg, read)
	if len(handlers) == 0 {
		if stray := sysvisorHandlers(cfg, other); len(stray) > 0 {
			return fail(check, fmt.Sprintf("%s: handler %s is under %s, which a version = %d config does not read", path, strings.Join(stray, ", "), other, version),
				"move it under "+read+" (docs/kubernetes.md has both forms)")
		}
		return warn(check, fmt.Sprintf("%s: no CRI runtime handler runs sysvisor-runc", path),
			"for Kubernetes, add ["+read+`.sysvisor] with runtime_type = "`+runcShimV2+`" and options.BinaryName (docs/kubernetes.md)`)
	}
	for _, name := range handlers {
		rt := table(cfg, read+"."+strconv.Quote(name))
		where := fmt.Sprintf("%s: [%s.%s]", path, read, name)
		if typ, _ := rt["runtime_type"].(string); typ != runcShimV2 {
			return fail(check, fmt.Sprintf("%s: runtime_type %q", where, typ), `set runtime_type = "`+runcShimV2+`": sysvisor-runc runs under containerd's runc shim`)
		}
		bin, _ := table(rt, "options")["BinaryName"].(string)
		if bin == "" {
			return fail(check, where+": no options.BinaryName: the shim would run plain runc", `add BinaryName = "/usr/local/bin/sysvisor-runc" under [`+read+"."+name+".options]")
		}
		if err := exists(bin); err != nil {
			return fail(check, fmt.Sprintf("%s: options.BinaryName %s: %v", where, bin, err), "make install, or correct the path")
		}
	}
	return ok(check, fmt.Sprintf("%s: handler %s (config version %d)", path, strings.Join(handlers, ", "), version))
}

// sysvisorHandlers names the runtimes under the dotted table path whose
// BinaryName is a sysvisor-runc, or which are named sysvisor.
func sysvisorHandlers(cfg map[string]any, path string) []string {
	var names []string
	for name, v := range table(cfg, path) {
		rt, _ := v.(map[string]any)
		bin, _ := table(rt, "options")["BinaryName"].(string)
		if name == "sysvisor" || filepath.Base(bin) == "sysvisor-runc" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// table walks a dotted path of TOML keys (quoted keys may hold dots).
func table(m map[string]any, path string) map[string]any {
	for _, k := range splitKeys(path) {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

func splitKeys(path string) []string {
	var keys []string
	for path != "" {
		if path[0] == '"' {
			end := strings.IndexByte(path[1:], '"')
			keys = append(keys, path[1:end+1])
			path = strings.TrimPrefix(path[end+2:], ".")
			continue
		}
		k, rest, _ := strings.Cut(path, ".")
		keys = append(keys, k)
		path = rest
	}
	return keys
}
