package runtime

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// captureStderr runs fn with os.Stderr redirected and returns what it wrote.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stderr
	os.Stderr = f
	defer func() { os.Stderr = old }()
	fn()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

type logLine struct {
	Level, Msg string
	Time       time.Time
}

// parseJSONLine decodes one line the way containerd's shim does, and insists
// on exactly the logrus keys.
func parseJSONLine(t *testing.T, line string) logLine {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("log line %q is not a JSON object of strings: %v", line, err)
	}
	if len(m) != 3 {
		t.Errorf("log line %q: want exactly level, msg and time", line)
	}
	ts, err := time.Parse(time.RFC3339Nano, m["time"])
	if err != nil {
		t.Errorf("log line %q: time: %v", line, err)
	}
	return logLine{Level: m["level"], Msg: m["msg"], Time: ts}
}

func TestLoggerJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	l := newLogger(Global{Log: path, LogFormat: "json"})
	before := time.Now().Add(-time.Second)
	msg := `container 4f1e: ID lease from sysvisord: "quoted"` + "\nsecond line"
	stderr := captureStderr(t, func() {
		l.Errorf("container %s: %v", "4f1e", errors.New(`ID lease from sysvisord: "quoted"`+"\nsecond line"))
		l.Warnf("bind mount %s keeps host ownership", "/data")
		l.Debugf("not without --debug")
	})
	after := time.Now().Add(time.Second)
	lines := readLines(t, path)
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2: %q", len(lines), lines)
	}
	want := []logLine{{Level: "error", Msg: msg}, {Level: "warning", Msg: "bind mount /data keeps host ownership"}}
	for i, line := range lines {
		got := parseJSONLine(t, line)
		if got.Level != want[i].Level || got.Msg != want[i].Msg {
			t.Errorf("line %d: level %q msg %q, want %q %q", i, got.Level, got.Msg, want[i].Level, want[i].Msg)
		}
		if got.Time.Before(before) || got.Time.After(after) {
			t.Errorf("line %d: time %v not now", i, got.Time)
		}
	}
	// Errors also go to stderr, which the engine shows when it has no log.
	if stderr != "sysvisor-runc: "+msg+"\n" {
		t.Errorf("stderr %q", stderr)
	}
}

func TestLoggerDebugAndAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	if err := os.WriteFile(path, []byte(`{"level":"info","msg":"from runc","time":"2024-01-01T00:00:00Z"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newLogger(Global{Log: path, LogFormat: "json", Debug: true})
	captureStderr(t, func() { l.Debugf("IDs %d+%d", 100, 65536) })
	lines := readLines(t, path)
	if len(lines) != 2 || !strings.Contains(lines[0], "from runc") {
		t.Fatalf("log lines %q: the existing line must be kept", lines)
	}
	if got := parseJSONLine(t, lines[1]); got.Level != "debug" || got.Msg != "IDs 100+65536" {
		t.Errorf("debug line %+v", got)
	}
}

func TestLoggerText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l := newLogger(Global{Log: path, LogFormat: "text"})
	captureStderr(t, func() { l.Errorf("bad %q", "thing") })
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("log lines %q", lines)
	}
	re := regexp.MustCompile(`^time="([^"]+)" level=error msg=(".*")$`)
	m := re.FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("text line %q is not logrus text format", lines[0])
	}
	if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
		t.Errorf("time %q: %v", m[1], err)
	}
	if msg, err := strconv.Unquote(m[2]); err != nil || msg != `bad "thing"` {
		t.Errorf("msg %s unquotes to %q, %v", m[2], msg, err)
	}
}

func TestLoggerNoFile(t *testing.T) {
	tests := []struct {
		name  string
		debug bool
		log   func(*Logger)
		want  string
	}{
		{"error", false, func(l *Logger) { l.Errorf("e%d", 1) }, "sysvisor-runc: e1\n"},
		{"warning without debug", false, func(l *Logger) { l.Warnf("w") }, ""},
		{"warning with debug", true, func(l *Logger) { l.Warnf("w") }, "sysvisor-runc: w\n"},
		{"debug without debug", false, func(l *Logger) { l.Debugf("d") }, ""},
		{"debug with debug", true, func(l *Logger) { l.Debugf("d") }, "sysvisor-runc: d\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLogger(Global{Debug: tc.debug, LogFormat: "json"})
			if got := captureStderr(t, func() { tc.log(l) }); got != tc.want {
				t.Errorf("stderr %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("unwritable log falls back to stderr", func(t *testing.T) {
		l := newLogger(Global{Log: filepath.Join(t.TempDir(), "missing", "log.json"), LogFormat: "json"})
		if got := captureStderr(t, func() { l.Warnf("w") }); got != "sysvisor-runc: w\n" {
			t.Errorf("stderr %q", got)
		}
	})
}

// TestMainBadFlagsLogsJSON: a command line sysvisor-runc cannot parse is
// reported where the shim reads create errors, in its format.
func TestMainBadFlagsLogsJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	var code int
	captureStderr(t, func() {
		code = Main([]string{"--root", "/r", "--log", path, "--log-format", "json", "--bogus", "create", "c"})
	})
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("log lines %q", lines)
	}
	if got := parseJSONLine(t, lines[0]); got.Level != "error" || !strings.Contains(got.Msg, "--bogus") {
		t.Errorf("logged %+v", got)
	}
}
