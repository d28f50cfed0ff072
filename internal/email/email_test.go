package email

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		in        string
		opt       Options
		norm      string
		canon     string
		wantError bool
	}{
		{in: "alice@example.com", norm: "alice@example.com", canon: "alice@example.com"},
		{in: "  Alice@Example.COM\t", norm: "alice@example.com", canon: "alice@example.com"},
		{in: "a.b+tag@example.com", norm: "a.b+tag@example.com", canon: "a.b+tag@example.com"},
		{in: "a.b+tag@example.com", opt: Options{StripPlusAllDomains: true}, norm: "a.b+tag@example.com", canon: "a.b@example.com"},
		{in: "J.O.H.N+beta@Gmail.com", norm: "j.o.h.n+beta@gmail.com", canon: "john@gmail.com"},
		{in: "john@googlemail.com", norm: "john@googlemail.com", canon: "john@gmail.com"},
		{in: "jo.hn+x+y@googlemail.com", norm: "jo.hn+x+y@googlemail.com", canon: "john@gmail.com"},
		{in: "user@bücher.de", norm: "user@xn--bcher-kva.de", canon: "user@xn--bcher-kva.de"},
		{in: "user@BÜCHER.de", norm: "user@xn--bcher-kva.de", canon: "user@xn--bcher-kva.de"},
		// Cyrillic "а" in "exаmple" is a different domain: valid, kept apart by punycode.
		{in: "user@ex\u0430mple.com", norm: "user@xn--exmple-4nf.com", canon: "user@xn--exmple-4nf.com"},
		// Fullwidth letters are mapped to ASCII by IDNA: the same domain.
		{in: "user@ｅxample.com", norm: "user@example.com", canon: "user@example.com"},
		{in: "o'brien{x}@sub.example.co.uk", norm: "o'brien{x}@sub.example.co.uk", canon: "o'brien{x}@sub.example.co.uk"},
		{in: strings.Repeat("a", 64) + "@example.com", norm: strings.Repeat("a", 64) + "@example.com", canon: strings.Repeat("a", 64) + "@example.com"},
		// 254 bytes exactly: 64 + 1 + 189.
		{in: strings.Repeat("a", 64) + "@" + long63 + "." + long63 + "." + strings.Repeat("b", 57) + ".com", norm: strings.Repeat("a", 64) + "@" + long63 + "." + long63 + "." + strings.Repeat("b", 57) + ".com", canon: strings.Repeat("a", 64) + "@" + long63 + "." + long63 + "." + strings.Repeat("b", 57) + ".com"},

		{in: "", wantError: true},
		{in: "   ", wantError: true},
		{in: "@", wantError: true},
		{in: "alice", wantError: true},
		{in: "alice@", wantError: true},
		{in: "@example.com", wantError: true},
		{in: "alice@localhost", wantError: true},
		{in: "alice@example.123", wantError: true},
		{in: "alice@[127.0.0.1]", wantError: true},
		{in: "alice@example.com.", wantError: true},
		{in: "alice@-example.com", wantError: true},
		{in: "alice@exa_mple.com", wantError: true},
		{in: "Alice <alice@example.com>", wantError: true},
		{in: "<alice@example.com>", wantError: true},
		{in: `"alice smith"@example.com`, wantError: true},
		{in: "alice(comment)@example.com", wantError: true},
		{in: "al ice@example.com", wantError: true},
		{in: "alice@example.com\r\nBcc: x@evil.com", wantError: true},
		{in: "ali\x00ce@example.com", wantError: true},
		{in: "ali\tce@example.com", wantError: true},
		{in: "ali\xffce@example.com", wantError: true},
		{in: ".alice@example.com", wantError: true},
		{in: "alice.@example.com", wantError: true},
		{in: "al..ice@example.com", wantError: true},
		{in: "alice@exa..mple.com", wantError: true},
		{in: "ålice@example.com", wantError: true},
		{in: "a@b@example.com", wantError: true},
		{in: strings.Repeat("a", 65) + "@example.com", wantError: true},
		{in: strings.Repeat("a", 64) + "@" + long63 + "." + long63 + "." + strings.Repeat("b", 58) + ".com", wantError: true}, // 255
		{in: "alice@" + strings.Repeat("a", 64) + ".com", wantError: true},
		{in: "+tag@gmail.com", wantError: true},
		{in: "...@gmail.com", wantError: true},
		{in: "+x@example.com", opt: Options{StripPlusAllDomains: true}, wantError: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in, tt.opt)
		if tt.wantError {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) = %+v, %v; want ErrInvalid", tt.in, got, err)
			}
			continue
		}
		if err != nil || got.Normalized != tt.norm || got.Canonical != tt.canon {
			t.Errorf("Parse(%q) = %+v, %v; want {%s %s}", tt.in, got, err, tt.norm, tt.canon)
		}
	}
}

func TestErrorNeverContainsAddress(t *testing.T) {
	for _, in := range []string{"secret-person@exa_mple.com", "secret person@example.com", "secret@localhost"} {
		_, err := Parse(in, Options{})
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error %v leaks the address", in, err)
		}
	}
}

func TestMask(t *testing.T) {
	tests := map[string]string{
		"john@example.com": "j***@example.com",
		"j@x.io":           "j***@x.io",
		"":                 "***",
		"nodomain@":        "***",
		"@x.io":            "***",
		"plain":            "***",
	}
	for in, want := range tests {
		if got := Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"alice@example.com", "J.O.H.N+x@googlemail.com", "user@bücher.de", "a@b", "\"q\"@x.io", "x@[1.2.3.4]", "é@ü.de", "a@xn--.com"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, strip bool) {
		opt := Options{StripPlusAllDomains: strip}
		a, err := Parse(in, opt)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !utf8.ValidString(a.Normalized) || len(a.Normalized) > MaxLength || strings.Count(a.Normalized, "@") != 1 {
			t.Fatalf("bad normalized %q", a.Normalized)
		}
		if a.Normalized != strings.ToLower(a.Normalized) || a.Canonical != strings.ToLower(a.Canonical) {
			t.Fatalf("not lowercase: %+v", a)
		}
		if len(a.Canonical) > len(a.Normalized) {
			t.Fatalf("canonical longer than normalized: %+v", a)
		}
		b, err := Parse(a.Normalized, opt)
		if err != nil || b != a {
			t.Fatalf("not idempotent: Parse(%q) = %+v, %v; first %+v", a.Normalized, b, err, a)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, in := range []string{"someone@example.com", "Some.One+beta@Gmail.com"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(in, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
