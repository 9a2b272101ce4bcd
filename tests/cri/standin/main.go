// standin plays the programs of critest's test images that the busybox
// rootfs has no equivalent of (tests/cri.sh critest builds those images
// locally: no registry is reachable). Which one it plays is its file name:
//
//	nginx             registry.k8s.io/e2e-test-images/nginx and cri-tools'
//	                  hostnet-nginx: a web server on $PORT (default 80)
//	                  whose PID 1 reads "nginx: master process ..." in
//	                  /proc/PID/cmdline, is named nginx (pidof), and
//	                  writes /var/run/nginx.pid, as the tests expect
//	httpd-foreground  e2e-test-images/httpd: the same web server
//	nonewprivs        e2e-test-images/nonewprivs: installed set-user-ID
//	                  root, prints "Effective uid: N"
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const masterTitle = "nginx: master process nginx -g daemon off;"

func main() {
	switch name := filepath.Base(os.Args[0]); {
	case name == "nonewprivs":
		fmt.Printf("Effective uid: %d\n", os.Geteuid())
	case name == "nginx":
		// The real nginx retitles its master: re-exec under that
		// argv[0] (same file, so the command name stays "nginx").
		exe, err := os.Executable()
		if err != nil {
			fail(err)
		}
		fail(syscall.Exec(exe, []string{masterTitle}, os.Environ()))
	case strings.HasPrefix(os.Args[0], "nginx: master process"):
		if err := os.MkdirAll("/var/run", 0o755); err != nil {
			fail(err)
		}
		if err := os.WriteFile("/var/run/nginx.pid", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fail(err)
		}
		serve("nginx")
	case name == "httpd-foreground":
		serve("httpd")
	default:
		fail(fmt.Errorf("unknown name %q", name))
	}
}

func serve(name string) {
	// As PID 1 a signal without a handler is ignored: stop on the usual ones.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	go func() { <-sig; os.Exit(0) }()
	port := os.Getenv("PORT")
	if port == "" {
		port = "80"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1></body></html>\n")
	})
	// The httpd test looks for "httpd" in the container's log.
	fmt.Fprintf(os.Stderr, "%s: serving on port %s\n", name, port)
	fail(http.ListenAndServe(":"+port, nil))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "standin: %v\n", err)
	os.Exit(1)
}
