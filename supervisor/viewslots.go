package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sysvisor/sysvisor/linux/statefile"
)

// viewSlots hands out the containers' slots on the views mount. A slot
// numbers a container's FUSE nodes and is never given twice on a mount (a
// kernel still holding an old container's node must not reach a new one),
// so the counter is persisted in <state-dir>/views.json before a slot is
// used. It never goes back, not even past a reboot: 2^40 slots last.
type viewSlots struct {
	path string
	next uint64
}

type viewSlotsFile struct {
	NextSlot uint64 `json:"nextSlot"`
}

// openViewSlots reads the counter, raised above every slot a record holds
// (in case the file was lost).
func openViewSlots(stateDir string, inUse []uint64) (*viewSlots, error) {
	v := &viewSlots{path: filepath.Join(stateDir, "views.json"), next: 1}
	b, err := os.ReadFile(v.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("view slots: %w", err)
	default:
		var f viewSlotsFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("view slots %s: %w", v.path, err)
		}
		v.next = max(v.next, f.NextSlot)
	}
	for _, s := range inUse {
		v.next = max(v.next, s+1)
	}
	return v, nil
}

// take returns a slot never returned before. The caller serialises calls.
func (v *viewSlots) take() (uint64, error) {
	slot := v.next
	b, _ := json.Marshal(viewSlotsFile{NextSlot: slot + 1})
	// Recorded before use; its life is the mount's, which ends with the
	// boot: no fsync needed.
	if err := statefile.Replace(v.path, b, 0o600); err != nil {
		return 0, fmt.Errorf("view slots: %w", err)
	}
	v.next = slot + 1
	return slot, nil
}
