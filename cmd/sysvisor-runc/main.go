// sysvisor-runc is the OCI runtime engines call: a runc-compatible CLI that
// makes each container a system container and delegates to the real runc.
package main

import (
	"os"

	"github.com/sysvisor/sysvisor/runtime"
)

func main() {
	os.Exit(runtime.Main(os.Args[1:]))
}
