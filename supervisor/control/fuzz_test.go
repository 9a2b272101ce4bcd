package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzReadRequest feeds sysvisord's request decoder arbitrary bytes, then,
// when endless is set, the pad byte forever: a client that never ends its
// request. ReadRequest never panics, never reads more than MaxRequestSize
// bytes (the memory a client can make sysvisord hold), rejects a request
// cut off by that limit as too large, and what it accepts survives the
// trip through the clients' encoder unchanged. Seeds: below and
// testdata/fuzz/FuzzReadRequest.
func FuzzReadRequest(f *testing.F) {
	for _, r := range []Request{
		{Op: OpPing},
		{Op: OpCreate, ID: "c1", Bundle: "/b", RuncRoot: "/run/runc", Policy: "strict", PolicySource: "env SYSVISOR_POLICY",
			PolicyDir: "/etc/sysvisor/policies", MaskedPaths: []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"}},
		{Op: OpTrace, ID: "c1", Syscall: "mount"},
		{Op: OpLogLevel, Level: "debug"},
	} {
		b, _ := json.Marshal(r)
		f.Add(b, byte(0), false)
	}
	f.Add([]byte(`{"op":"ping"}{"op":"delete","id":"c1"}`), byte(0), false)
	f.Add([]byte(`{"op":"create","maskedPaths":[]}`), byte(0), false)
	f.Add([]byte(`{"op":"create","id":"\ud800\u0000"}`), byte(0), false)
	f.Add([]byte(`{"op":"create","id":"`), byte('a'), true)
	f.Add([]byte(``), byte(' '), true)
	f.Add([]byte(`{"maskedPaths":`), byte('['), true)
	f.Add([]byte(`null`), byte(0), false)
	f.Add([]byte("{\"id\":\"\xff\"}"), byte(0), false)

	f.Fuzz(func(t *testing.T, data []byte, pad byte, endless bool) {
		var src io.Reader = bytes.NewReader(data)
		if endless {
			src = io.MultiReader(src, repeat(pad))
		}
		cr := &countingReader{r: src}
		req, err := ReadRequest(cr)
		if cr.n > MaxRequestSize {
			t.Fatalf("read %d bytes, more than %d", cr.n, MaxRequestSize)
		}
		// One complete JSON document within the limit decodes as
		// json.Unmarshal decodes it.
		var want Request
		if !endless && len(data) <= MaxRequestSize && json.Unmarshal(data, &want) == nil {
			if err != nil {
				t.Fatalf("refused a request json.Unmarshal takes: %v", err)
			}
			if !reflect.DeepEqual(req, want) {
				t.Fatalf("decoded %#v, json.Unmarshal %#v", req, want)
			}
		}
		if err != nil {
			if strings.Contains(err.Error(), "larger than") && cr.n < MaxRequestSize {
				t.Errorf("size error after %d bytes: %v", cr.n, err)
			}
			if cr.n == MaxRequestSize && errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("request cut by the limit reported as truncated: %v", err)
			}
			return
		}
		// What the decoder made of the bytes is what a client sends.
		if err := req.check(); err != nil {
			t.Fatalf("decoded request refused by the encoder: %v", err)
		}
		roundTrip(t, req)
	})
}

// FuzzRequestRoundTrip builds requests the way sysvisor-runc and
// sysvisorctl do, from arbitrary strings (a bundle path may be any bytes),
// and sends them through the clients' encoder and sysvisord's decoder. A
// request Call would send arrives unchanged; one it would not is refused
// with an error that names the field.
func FuzzRequestRoundTrip(f *testing.F) {
	f.Add(OpCreate, "c1", "/b", "/run/runc", "default", "annotation io.sysvisor.policy", "", "", "", "/proc/kcore\n/proc/keys", "/proc/sys")
	f.Add(OpTrace, "", "", "", "", "", "", "", "mount", "", "")
	f.Add(OpCreate, "c1", "/bundles/\xff\xfe", "/run/runc", "", "", "", "", "", "", "")
	f.Add(OpCreate, "c1", "/b", "", "", "", "", "", "", "/ok\n/\xc3", "")
	f.Add("", "\x00", "\"\\", "\u2028", "<>&", "", "", "", "", "\n", "\n\n")
	f.Fuzz(func(t *testing.T, op, id, bundle, runcRoot, pol, polSource, polDir, level, syscall, masked, readonly string) {
		req := Request{Op: op, ID: id, Bundle: bundle, RuncRoot: runcRoot, Policy: pol, PolicySource: polSource,
			PolicyDir: polDir, Level: level, Syscall: syscall, MaskedPaths: lines(masked), ReadonlyPaths: lines(readonly)}
		if err := req.check(); err != nil {
			field := strings.TrimPrefix(strings.SplitN(err.Error(), ":", 2)[0], "request field ")
			if field == err.Error() || utf8.ValidString(fieldValue(req, field)) {
				t.Fatalf("refused with %q, which names no field whose value is not UTF-8", err)
			}
			return
		}
		roundTrip(t, req)
	})
}

// roundTrip encodes req as Call does and decodes it as sysvisord does.
func roundTrip(t *testing.T, req Request) {
	t.Helper()
	var wire bytes.Buffer
	if err := json.NewEncoder(&wire).Encode(req); err != nil {
		t.Fatalf("encode %+v: %v", req, err)
	}
	sent := wire.String()
	got, err := ReadRequest(&wire)
	if err != nil {
		t.Fatalf("decode %s: %v", sent, err)
	}
	if !reflect.DeepEqual(normal(got), normal(req)) {
		t.Fatalf("round trip changed the request:\n sent %#v\n  got %#v\n wire %s", req, got, sent)
	}
	again, _ := json.Marshal(got)
	if string(again)+"\n" != sent {
		t.Fatalf("encoding not stable:\n %s\n %s", sent, again)
	}
}

// normal makes empty lists nil: omitempty sends neither, and sysvisord
// treats them alike.
func normal(r Request) Request {
	if len(r.MaskedPaths) == 0 {
		r.MaskedPaths = nil
	}
	if len(r.ReadonlyPaths) == 0 {
		r.ReadonlyPaths = nil
	}
	return r
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// fieldValue returns the value of a field as check names it ("bundle",
// "maskedPaths[1]").
func fieldValue(r Request, field string) string {
	name, idx, _ := strings.Cut(strings.TrimSuffix(field, "]"), "[")
	v := reflect.ValueOf(r)
	for i := 0; i < v.NumField(); i++ {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if tag != name {
			continue
		}
		if idx == "" {
			return v.Field(i).String()
		}
		var n int
		for _, c := range idx {
			n = n*10 + int(c-'0')
		}
		if n < v.Field(i).Len() {
			return v.Field(i).Index(n).String()
		}
	}
	return ""
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// repeat is an endless stream of one byte.
type repeat byte

func (b repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}
