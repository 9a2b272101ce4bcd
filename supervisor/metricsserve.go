package supervisor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/metrics"
	"github.com/sysvisor/sysvisor/supervisor/stats"
)

// startMetrics serves Prometheus metrics on cfg.MetricsAddr (already
// completed by metrics.Addr) and returns the function that stops it and
// waits for it. Listening happens here, so a bad address fails the start.
func (s *Server) startMetrics() (stop func(), err error) {
	if s.cfg.MetricsAddr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return nil, err
	}
	if !metrics.Loopback(s.cfg.MetricsAddr) {
		s.log.Warn("metrics served beyond loopback: any host that reaches this address reads them", "addr", l.Addr().String())
	}
	srv := &http.Server{Handler: metrics.Handler(metricsSource{s}), ReadHeaderTimeout: 10 * time.Second}
	addr := l.Addr().String()
	s.metricsAddr.Store(&addr)
	s.log.Info("serving metrics", "url", "http://"+addr+"/metrics")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server", "error", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
		<-done
	}, nil
}

// MetricsAddr is where metrics are served ("" when they are not), known
// once Run listens.
func (s *Server) MetricsAddr() string {
	if a := s.metricsAddr.Load(); a != nil {
		return *a
	}
	return ""
}

type metricsSource struct{ s *Server }

func (m metricsSource) Stats() []stats.Row { return m.s.stats.Rows("") }

func (m metricsSource) Containers() map[string]int {
	out := map[string]int{}
	for _, c := range m.s.reg.List() {
		out[c.Snapshot().Status]++
	}
	return out
}

func (m metricsSource) Listeners() int {
	n := 0
	for _, c := range m.s.reg.List() {
		n += int(c.Listeners.Load())
	}
	return n
}

func (m metricsSource) Leases() (int, int) {
	return len(m.s.leases.List()), int(m.s.leases.Pool().Size / 65536)
}
