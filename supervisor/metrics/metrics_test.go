package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/stats"
)

func TestAddr(t *testing.T) {
	for in, want := range map[string]string{
		"9464": "127.0.0.1:9464", ":9464": "127.0.0.1:9464", "0.0.0.0:9464": "0.0.0.0:9464",
		"[::1]:9464": "[::1]:9464", "localhost:0": "localhost:0",
	} {
		if got, err := Addr(in); err != nil || got != want {
			t.Errorf("Addr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x:y", "1.2.3.4:99999", "a:b:c"} {
		if got, err := Addr(bad); err == nil {
			t.Errorf("Addr(%q) = %q, want an error", bad, got)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "0.0.0.0:1": false, "10.0.0.1:1": false} {
		if Loopback(addr) != want {
			t.Errorf("Loopback(%q) != %v", addr, want)
		}
	}
}

type fakeSource struct{ set *stats.Set }

func (f fakeSource) Stats() []stats.Row         { return f.set.Rows("") }
func (f fakeSource) Containers() map[string]int { return map[string]int{"running": 2, "stopped": 1} }
func (f fakeSource) Listeners() int             { return 3 }
func (f fakeSource) Leases() (int, int)         { return 3, 4096 }

func scrape(t *testing.T, src Source) string {
	t.Helper()
	srv := httptest.NewServer(Handler(src))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s\n%s", resp.Status, b)
	}
	return string(b)
}

func TestExposition(t *testing.T) {
	set := stats.NewSet()
	sh := set.NewShard("c1")
	k := stats.KeyOf("sysinfo", "emulate")
	for i := 0; i < 3; i++ {
		sh.Observe(k, stats.Return, 3*time.Microsecond) // below 2^12 ns
	}
	sh.Observe(k, stats.Return, 100*time.Microsecond) // between 2^16 and 2^17 ns
	sh.Observe(stats.KeyOf("mount", "deny"), stats.Errno, 2*time.Microsecond)
	out := scrape(t, fakeSource{set})
	for _, want := range []string{
		`sysvisord_notifications_total{action="emulate",decision="return",syscall="sysinfo"} 4`,
		`sysvisord_notifications_total{action="deny",decision="errno",syscall="mount"} 1`,
		`sysvisord_notifications_total{action="emulate",decision="gone",syscall="sysinfo"} 0`,
		`sysvisord_notification_latency_seconds_bucket{action="emulate",syscall="sysinfo",le="2.048e-06"} 0`,
		`sysvisord_notification_latency_seconds_bucket{action="emulate",syscall="sysinfo",le="4.096e-06"} 3`,
		`sysvisord_notification_latency_seconds_bucket{action="emulate",syscall="sysinfo",le="6.5536e-05"} 3`,
		`sysvisord_notification_latency_seconds_bucket{action="emulate",syscall="sysinfo",le="0.000131072"} 4`,
		`sysvisord_notification_latency_seconds_bucket{action="emulate",syscall="sysinfo",le="+Inf"} 4`,
		`sysvisord_notification_latency_seconds_count{action="emulate",syscall="sysinfo"} 4`,
		`sysvisord_notification_latency_seconds_sum{action="emulate",syscall="sysinfo"} 0.000109`,
		`sysvisord_containers{status="running"} 2`,
		`sysvisord_listeners 3`,
		`sysvisord_leases 3`,
		`sysvisord_lease_pool_blocks 4096`,
		`go_goroutines `,
	} {
		if !strings.Contains(out, want+"\n") && !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", out)
	}
	// No container ids in labels: cardinality, and what a scraper learns.
	if strings.Contains(out, "c1") {
		t.Error("a container id leaked into the metrics")
	}
}
