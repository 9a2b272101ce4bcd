package procview

import (
	"crypto/sha256"
	"fmt"
)

// ProductUUID is the container's DMI product_uuid: stable for a container
// id (a restart shows the same), different between containers, never the
// host's. Software uses it as a machine identity (licensing, cluster
// membership), so containers must not share one. A name-based UUID (RFC
// 9562 version 8 layout: SHA-256 of a sysvisor prefix and the id).
func ProductUUID(id string) []byte {
	h := sha256.Sum256([]byte("sysvisor product_uuid\x00" + id))
	h[6] = h[6]&0x0f | 0x80 // version 8
	h[8] = h[8]&0x3f | 0x80 // RFC variant
	return fmt.Appendf(nil, "%x-%x-%x-%x-%x\n", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
