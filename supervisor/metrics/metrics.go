// Package metrics exposes sysvisord's figures in Prometheus' text format:
// notifications by syscall, action and decision, their latency histogram,
// containers, listeners and leases. Everything is read at scrape time from
// the supervisor's own counters (stats shards merged on read, the registry,
// the lease store): the notify path does no extra work for metrics.
package metrics

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sysvisor/sysvisor/supervisor/stats"
)

// Source is what a scrape reads.
type Source interface {
	// Stats are the merged statistics of every listener, ended ones
	// included.
	Stats() []stats.Row
	// Containers counts the containers by status.
	Containers() map[string]int
	// Listeners counts live seccomp listeners.
	Listeners() int
	// Leases returns the leased blocks and the pool's size in blocks.
	Leases() (leased, blocks int)
}

// Bucket bounds of the latency histogram: powers of two of nanoseconds
// from 1.024 µs to 1.07 s. They are boundaries of the stats histogram's own
// buckets, so the cumulative counts are exact (each counts the
// observations below its bound).
var boundsNs = func() []uint64 {
	var b []uint64
	for e := 10; e <= 30; e++ {
		b = append(b, 1<<e)
	}
	return b
}()

var (
	notifications = prometheus.NewDesc("sysvisord_notifications_total",
		"Seccomp notifications answered, by syscall, policy action and decision (continue, return, errno, gone: the caller left first, limited: refused by the rate guard).",
		[]string{"syscall", "action", "decision"}, nil)
	latency = prometheus.NewDesc("sysvisord_notification_latency_seconds",
		"Time from a notification's receipt to its answer's delivery, by syscall and policy action.",
		[]string{"syscall", "action"}, nil)
	containers = prometheus.NewDesc("sysvisord_containers", "Containers sysvisord knows, by status.", []string{"status"}, nil)
	listeners  = prometheus.NewDesc("sysvisord_listeners", "Live seccomp listeners (one per container init, plus one per exec).", nil, nil)
	leases     = prometheus.NewDesc("sysvisord_leases", "Leased 65536-ID blocks.", nil, nil)
	poolBlocks = prometheus.NewDesc("sysvisord_lease_pool_blocks", "65536-ID blocks in the subordinate-ID pool.", nil, nil)
)

type collector struct{ src Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{notifications, latency, containers, listeners, leases, poolBlocks} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.src.Stats() {
		action := r.Action
		if action == "" {
			action = "none"
		}
		for _, d := range []struct {
			name string
			n    uint64
		}{{"continue", r.Continue}, {"return", r.Return}, {"errno", r.Errno}, {"gone", r.Gone}, {"limited", r.Limited}} {
			ch <- prometheus.MustNewConstMetric(notifications, prometheus.CounterValue, float64(d.n), r.Syscall, action, d.name)
		}
		if r.Latency == nil {
			continue
		}
		buckets := make(map[float64]uint64, len(boundsNs))
		for _, b := range boundsNs {
			buckets[float64(b)/1e9] = r.Latency.CountBelow(b)
		}
		ch <- prometheus.MustNewConstHistogram(latency, r.Latency.Count, float64(r.Latency.SumNs)/1e9, buckets, r.Syscall, action)
	}
	for status, n := range c.src.Containers() {
		ch <- prometheus.MustNewConstMetric(containers, prometheus.GaugeValue, float64(n), status)
	}
	ch <- prometheus.MustNewConstMetric(listeners, prometheus.GaugeValue, float64(c.src.Listeners()))
	leased, blocks := c.src.Leases()
	ch <- prometheus.MustNewConstMetric(leases, prometheus.GaugeValue, float64(leased))
	ch <- prometheus.MustNewConstMetric(poolBlocks, prometheus.GaugeValue, math.Max(0, float64(blocks)))
}

// Handler serves /metrics for src (and the Go runtime's and process'
// standard metrics).
func Handler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{src}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return mux
}

// Addr completes a --metrics address: a bare port or ":port" listens on
// loopback only (the figures are for the host's own collector; name an
// address to expose them further).
func Addr(a string) (string, error) {
	if a == "" {
		return "", errors.New("empty address")
	}
	if !strings.Contains(a, ":") {
		a = ":" + a
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", fmt.Errorf("metrics address %q: %w", a, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("metrics address %q: bad port %q", a, port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Loopback reports whether addr (from Addr) listens on loopback only.
func Loopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
