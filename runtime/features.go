package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/sysvisor/sysvisor/linux/statefile"
)

type seccompFeatures struct {
	Key     string   `json:"key"`
	Actions []string `json:"actions"`
	Flags   []string `json:"flags"`
}

// runcFeatures asks runc what its seccomp supports, caching the answer per
// runc binary (path, size, mtime) so a create does not pay for an extra exec.
func runcFeatures(runc, runDir string) (*seccompFeatures, error) {
	path, err := exec.LookPath(runc)
	if err != nil {
		return nil, fmt.Errorf("runc binary %q: %w", runc, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s:%d:%d", path, st.Size(), st.ModTime().UnixNano())
	cache := filepath.Join(runDir, "runc-features.json")
	var f seccompFeatures
	if b, err := os.ReadFile(cache); err == nil && json.Unmarshal(b, &f) == nil && f.Key == key {
		return &f, nil
	}
	out, err := exec.Command(path, "features").Output()
	if err != nil {
		return nil, fmt.Errorf("%s features: %w (runc >= 1.1 is required)", path, err)
	}
	var feat features.Features
	if err := json.Unmarshal(out, &feat); err != nil {
		return nil, fmt.Errorf("%s features: %w", path, err)
	}
	f = seccompFeatures{Key: key}
	if feat.Linux != nil && feat.Linux.Seccomp != nil && feat.Linux.Seccomp.Enabled != nil && *feat.Linux.Seccomp.Enabled {
		f.Actions = feat.Linux.Seccomp.Actions
		f.Flags = feat.Linux.Seccomp.SupportedFlags
	}
	if b, err := json.Marshal(f); err == nil && os.MkdirAll(runDir, 0o711) == nil {
		statefile.Replace(cache, b, 0o644)
	}
	return &f, nil
}
