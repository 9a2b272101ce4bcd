package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Logger writes what runc would: with --log-format json, one logrus-style
// line {"level","msg","time"} per entry, which the containerd shim reads back
// to report a failed create to `docker run`.
type Logger struct {
	path  string
	json  bool
	debug bool
}

func newLogger(g Global) *Logger {
	return &Logger{path: g.Log, json: g.LogFormat == "json", debug: g.Debug}
}

func (l *Logger) write(level, msg string) {
	if l.path == "" {
		if level == "error" || l.debug {
			fmt.Fprintf(os.Stderr, "sysvisor-runc: %s\n", msg)
		}
		return
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sysvisor-runc: %s\n", msg)
		return
	}
	defer f.Close()
	ts := time.Now().Format(time.RFC3339Nano)
	if l.json {
		b, _ := json.Marshal(map[string]string{"level": level, "msg": msg, "time": ts})
		f.Write(append(b, '\n'))
	} else {
		fmt.Fprintf(f, "time=%q level=%s msg=%q\n", ts, level, msg)
	}
}

// Errorf logs an error where the engine will look for it, and on stderr.
func (l *Logger) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.write("error", msg)
	if l.path != "" {
		fmt.Fprintf(os.Stderr, "sysvisor-runc: %s\n", msg)
	}
}

// Debugf logs with --debug only.
func (l *Logger) Debugf(format string, args ...any) {
	if l.debug {
		l.write("debug", fmt.Sprintf(format, args...))
	}
}

// Warnf logs a warning.
func (l *Logger) Warnf(format string, args ...any) { l.write("warning", fmt.Sprintf(format, args...)) }
