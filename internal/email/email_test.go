package email

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

func TestParse(t *testing.T) {
	var (
		strip   = Options{StripPlusAllDomains: true}
		a64     = strings.Repeat("a", 64)
		l63     = strings.Repeat("l", 63)
		d189    = l63 + "." + l63 + "." + strings.Repeat("b", 57) + ".com" // 189 bytes
		d190    = l63 + "." + l63 + "." + strings.Repeat("b", 58) + ".com"
		d253    = l63 + "." + l63 + "." + l63 + "." + strings.Repeat("c", 61)
		d254    = d253 + "c"
		at254   = a64 + "@" + d189 // exactly the limit
		at255   = a64 + "@" + d190
		fw      = "\uff45xample.com" // fullwidth "e"
		cyrilla = "ex\u0430mple.com" // Cyrillic "а" (U+0430) instead of Latin "a"
	)
	tests := []struct {
		name  string
		in    string
		opt   Options
		norm  string
		canon string
		err   error // nil: valid
	}{
		{name: "plain", in: "alice@example.com", norm: "alice@example.com", canon: "alice@example.com"},
		{name: "trim and lowercase", in: " \t Alice@Example.COM\r\n", norm: "alice@example.com", canon: "alice@example.com"},
		{name: "all atext", in: "a!#$%&'*+/=?^_`{|}~-z@example.com", norm: "a!#$%&'*+/=?^_`{|}~-z@example.com", canon: "a!#$%&'*+/=?^_`{|}~-z@example.com"},
		{name: "subdomains", in: "o'brien@mail.sub.example.co.uk", norm: "o'brien@mail.sub.example.co.uk", canon: "o'brien@mail.sub.example.co.uk"},
		{name: "digits and hyphens in domain", in: "x@1-2.3com.io", norm: "x@1-2.3com.io", canon: "x@1-2.3com.io"},

		// Plus tags and dots outside Gmail.
		{name: "plus kept by default", in: "a.b+tag@example.com", norm: "a.b+tag@example.com", canon: "a.b+tag@example.com"},
		{name: "plus stripped everywhere", in: "a.b+tag+more@example.com", opt: strip, norm: "a.b+tag+more@example.com", canon: "a.b@example.com"},
		{name: "strip without plus", in: "a.b@example.com", opt: strip, norm: "a.b@example.com", canon: "a.b@example.com"},
		{name: "strip leaves empty", in: "+x@example.com", opt: strip, err: errEmptyCanon},
		{name: "lone plus without strip", in: "+x@example.com", norm: "+x@example.com", canon: "+x@example.com"},

		// Gmail.
		{name: "gmail dots and plus", in: "J.O.H.N+beta@Gmail.com", norm: "j.o.h.n+beta@gmail.com", canon: "john@gmail.com"},
		{name: "gmail dot after plus", in: "jo+a.b@gmail.com", norm: "jo+a.b@gmail.com", canon: "jo@gmail.com"},
		{name: "gmail unchanged", in: "john@gmail.com", norm: "john@gmail.com", canon: "john@gmail.com"},
		{name: "googlemail", in: "john@googlemail.com", norm: "john@googlemail.com", canon: "john@gmail.com"},
		{name: "googlemail dots and plus", in: "Jo.hn+x+y@GoogleMail.com", opt: strip, norm: "jo.hn+x+y@googlemail.com", canon: "john@gmail.com"},
		{name: "gmail subdomain is not gmail", in: "j.o+x@mail.gmail.com", norm: "j.o+x@mail.gmail.com", canon: "j.o+x@mail.gmail.com"},
		{name: "gmail only tag", in: "+tag@gmail.com", err: errEmptyCanon},
		{name: "gmail only dot and tag", in: "a.+tag@gmail.com", norm: "a.+tag@gmail.com", canon: "a@gmail.com"},
		{name: "gmail only dots", in: "...@gmail.com", err: errLocalDot},
		{name: "gmail dots then tag", in: "+.x@googlemail.com", err: errEmptyCanon},

		// Internationalized domains.
		{name: "IDN", in: "user@bücher.de", norm: "user@xn--bcher-kva.de", canon: "user@xn--bcher-kva.de"},
		{name: "IDN upper case", in: "User@BÜCHER.DE", norm: "user@xn--bcher-kva.de", canon: "user@xn--bcher-kva.de"},
		{name: "IDN decomposed", in: "user@bu\u0308cher.de", norm: "user@xn--bcher-kva.de", canon: "user@xn--bcher-kva.de"},
		{name: "IDN already punycode", in: "user@xn--bcher-kva.de", norm: "user@xn--bcher-kva.de", canon: "user@xn--bcher-kva.de"},
		{name: "IDN punycode upper case", in: "user@XN--BCHER-KVA.DE", norm: "user@xn--bcher-kva.de", canon: "user@xn--bcher-kva.de"},
		// A homoglyph is a different, valid domain: punycode keeps it apart.
		{name: "Cyrillic homoglyph", in: "user@" + cyrilla, norm: "user@xn--exmple-4nf.com", canon: "user@xn--exmple-4nf.com"},
		{name: "all-Cyrillic", in: "user@пример.рф", norm: "user@xn--e1afmkfd.xn--p1ai", canon: "user@xn--e1afmkfd.xn--p1ai"},
		// IDNA folds compatibility forms: these are the same domain.
		{name: "fullwidth letter", in: "user@" + fw, norm: "user@example.com", canon: "user@example.com"},
		{name: "ideographic full stop", in: "user@example\u3002com", norm: "user@example.com", canon: "user@example.com"},
		{name: "fullwidth gmail", in: "j.o@\uff47mail.com", norm: "j.o@gmail.com", canon: "jo@gmail.com"},
		{name: "bad punycode", in: "user@xn--a.com", err: errIDN},
		{name: "punycode of ASCII", in: "user@xn--abc-.com", err: errIDN},
		{name: "empty punycode", in: "user@xn--.com", err: errLabel},
		{name: "reserved hyphens", in: "user@ab--cd.com", err: errLabel},
		{name: "disallowed rune in IDN", in: "user@b\u00fccher\u2028.de", err: errIDN},
		{name: "IDN trailing dot", in: "user@bücher.de.", err: errLabel},
		// UTS 46 (unlike IDNA2008) allows symbols; idna.Lookup follows it.
		{name: "symbol in IDN", in: "user@bü☃cher.de", norm: "user@xn--bcher-kva7647d.de", canon: "user@xn--bcher-kva7647d.de"},

		// Length limits.
		{name: "local 64", in: a64 + "@example.com", norm: a64 + "@example.com", canon: a64 + "@example.com"},
		{name: "local 65", in: a64 + "a@example.com", err: errLocalLong},
		{name: "total 254", in: at254, norm: at254, canon: at254},
		{name: "total 254 upper", in: strings.ToUpper(at254), norm: at254, canon: at254},
		{name: "total 255", in: at255, err: errTooLong},
		{name: "domain 254", in: "a@" + d254, err: errDomainLong},
		{name: "domain 253 too long with local", in: "a@" + d253, err: errTooLong},
		{name: "label 63", in: "a@" + l63 + ".com", norm: "a@" + l63 + ".com", canon: "a@" + l63 + ".com"},
		{name: "label 64", in: "a@" + l63 + "l.com", err: errLabel},
		{name: "huge input", in: strings.Repeat("a", 5000) + "@example.com", err: errTooLong},
		{name: "IDN shrinks under limit", in: a64 + "@" + strings.Repeat("\uff4c", 63) + ".com", norm: a64 + "@" + l63 + ".com", canon: a64 + "@" + l63 + ".com"},

		// Shape.
		{name: "empty", in: "", err: errEmpty},
		{name: "blank", in: " \t\n", err: errEmpty},
		{name: "only at", in: "@", err: errShape},
		{name: "no at", in: "alice", err: errShape},
		{name: "no domain", in: "alice@", err: errShape},
		{name: "no local", in: "@example.com", err: errShape},
		{name: "two ats", in: "a@b@example.com", err: errLocalChar},
		{name: "display name", in: "John <j@x.com>", err: errLocalChar},
		{name: "quoted display name", in: `"John" <j@x.com>`, err: errLocalChar},
		{name: "angle brackets", in: "<alice@example.com>", err: errLocalChar},
		{name: "quoted local", in: `"a b"@x.com`, err: errLocalChar},
		{name: "quoted local no space", in: `"ab"@x.com`, err: errLocalChar},
		{name: "comment", in: "alice(comment)@example.com", err: errLocalChar},
		{name: "comment in domain", in: "alice@example.com(x)", err: errDomainChar},
		{name: "backslash", in: `a\b@example.com`, err: errLocalChar},
		{name: "comma list", in: "a@x.com,b@y.com", err: errLocalChar},

		// White space and control characters inside.
		{name: "space in local", in: "al ice@example.com", err: errLocalChar},
		{name: "space in domain", in: "alice@exa mple.com", err: errDomainChar},
		{name: "space before at", in: "alice @example.com", err: errLocalChar},
		{name: "CRLF header injection", in: "alice@example.com\r\nBcc: x@evil.com", err: errLocalChar},
		{name: "CRLF in local", in: "ali\r\nce@example.com", err: errLocalChar},
		{name: "LF in domain", in: "alice@exam\nple.com", err: errDomainChar},
		{name: "NUL", in: "ali\x00ce@example.com", err: errLocalChar},
		{name: "NUL in domain", in: "alice@example.com\x00", err: errDomainChar},
		{name: "tab", in: "ali\tce@example.com", err: errLocalChar},
		{name: "DEL", in: "ali\x7fce@example.com", err: errLocalChar},
		{name: "NEL in domain", in: "alice@exa\u0085mple.com", err: errIDN},
		{name: "no-break space in domain", in: "alice@exa\u00a0mple.com", err: errIDN},
		{name: "invalid UTF-8", in: "ali\xffce@example.com", err: errUTF8},
		{name: "invalid UTF-8 in domain", in: "alice@b\xfccher.de", err: errUTF8},

		// Local part.
		{name: "leading dot", in: ".alice@example.com", err: errLocalDot},
		{name: "trailing dot", in: "alice.@example.com", err: errLocalDot},
		{name: "double dot", in: "al..ice@example.com", err: errLocalDot},
		{name: "only dot", in: ".@example.com", err: errLocalDot},
		{name: "non-ASCII local", in: "ålice@example.com", err: errLocalASCII},
		// strings.ToLower maps the Kelvin sign to ASCII 'k': it must not sneak through.
		{name: "Kelvin sign local", in: "\u212aate@example.com", err: errLocalASCII},
		{name: "Cyrillic local", in: "\u0430lice@example.com", err: errLocalASCII},

		// Domain.
		{name: "no dot", in: "alice@localhost", err: errDomainDot},
		{name: "IDN no dot", in: "alice@bücher", err: errDomainDot},
		{name: "numeric TLD", in: "alice@example.123", err: errNumericTLD},
		{name: "IPv4", in: "alice@127.0.0.1", err: errNumericTLD},
		{name: "IP literal", in: "alice@[127.0.0.1]", err: errDomainChar},
		{name: "IPv6 literal", in: "alice@[IPv6:::1]", err: errDomainChar},
		{name: "trailing dot", in: "alice@example.com.", err: errLabel},
		{name: "leading dot", in: "alice@.example.com", err: errLabel},
		{name: "double dot", in: "alice@exa..mple.com", err: errLabel},
		{name: "leading hyphen", in: "alice@-example.com", err: errLabel},
		{name: "trailing hyphen", in: "alice@example-.com", err: errLabel},
		{name: "underscore", in: "alice@exa_mple.com", err: errDomainChar},
		{name: "port", in: "alice@example.com:25", err: errDomainChar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in, tt.opt)
			if tt.err != nil {
				if err != tt.err || !errors.Is(err, ErrInvalid) || got != (Address{}) {
					t.Fatalf("Parse(%q) = %+v, %v; want %v", tt.in, got, err, tt.err)
				}
				return
			}
			want := Address{Normalized: tt.norm, Canonical: tt.canon}
			if err != nil || got != want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, want)
			}
		})
	}
}

func TestErrorNeverContainsAddress(t *testing.T) {
	for _, in := range []string{
		"secret-person@exa_mple.com", "secret person@example.com", "secret@localhost",
		"x@secret.xn--a.com", "x@se--cret.com", "x@secret\u2028.de", "+secret@gmail.com",
	} {
		_, err := Parse(in, Options{})
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error %v leaks the address", in, err)
		}
	}
}

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"john@example.com", "j***@example.com"},
		{"j@x.io", "j***@x.io"},
		{" John.Smith+x@Example.COM ", "j***@example.com"},
		{"user@bücher.de", "u***@xn--bcher-kva.de"},
		{"", "***"},
		{"plain", "***"},
		{"nodomain@", "***"},
		{"@x.io", "***"},
		{"John <john@example.com>", "***"},
		{"a@example.com\r\nlevel=error msg=forged", "***"},
		{"ålice@example.com", "***"},
		{"\xff@example.com", "***"},
	}
	for _, tt := range tests {
		if got := Mask(tt.in); got != tt.want {
			t.Errorf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// referenceDomain is what normalizeDomain must equal: idna.Lookup on every
// domain, then the ASCII host-name rules.
func referenceDomain(d string) (string, error) {
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", errIDN
	}
	_, err = checkASCIIDomain(a)
	return a, err
}

func TestFastPathMatchesIDNA(t *testing.T) {
	for _, d := range []string{
		"example.com", "EXAMPLE.com", "a.b", "ab--cd.com", "xn--bcher-kva.de", "Xn--Bcher-Kva.de",
		"a-.com", "-a.com", "a..com", ".a.com", "a.com.", "a_b.com", "a b.com", "1.2.3.4", "x.1a",
		"xn--.com", "xn--a.com", "a.xn--p1ai", "xna--b.com", "x--n.com", "--.com", "a.-",
	} {
		fast, _, errFast := normalizeDomain(d)
		ref, errRef := referenceDomain(d)
		if (errFast == nil) != (errRef == nil) || errFast == nil && strings.ToLower(fast) != ref {
			t.Errorf("%q: fast path %q, %v; idna.Lookup %q, %v", d, fast, errFast, ref, errRef)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"alice@example.com", "J.O.H.N+x@googlemail.com", "user@bücher.de", "user@xn--bcher-kva.de",
		"a@b", "\"q\"@x.io", "x@[1.2.3.4]", "é@ü.de", "a@xn--.com", "John <j@x.com>",
		"a@b.c\r\nBcc: d@e.f", "+@gmail.com", "\u212a@example.com", "user@\uff45xample\u3002com",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, strip bool) {
		opt := Options{StripPlusAllDomains: strip}

		// The ASCII fast path must agree with idna.Lookup on any domain.
		if d := in[strings.LastIndexByte(in, '@')+1:]; utf8.ValidString(d) && len(d) <= maxInput {
			fast, _, errFast := normalizeDomain(d)
			ref, errRef := referenceDomain(d)
			if (errFast == nil) != (errRef == nil) || errFast == nil && strings.ToLower(fast) != ref {
				t.Fatalf("domain %q: fast path %q, %v; idna.Lookup %q, %v", d, fast, errFast, ref, errRef)
			}
		}

		a, err := Parse(in, opt)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || a != (Address{}) {
				t.Fatalf("Parse(%q) = %+v, %v; want zero Address and ErrInvalid", in, a, err)
			}
			return
		}
		if !utf8.ValidString(a.Normalized) || len(a.Normalized) > maxLength || strings.Count(a.Normalized, "@") != 1 {
			t.Fatalf("Parse(%q): bad normalized %q", in, a.Normalized)
		}
		for i := 0; i < len(a.Normalized); i++ {
			if c := a.Normalized[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("Parse(%q): normalized %q has byte %#x", in, a.Normalized, c)
			}
		}
		if a.Normalized != strings.ToLower(a.Normalized) || a.Canonical != strings.ToLower(a.Canonical) {
			t.Fatalf("Parse(%q): not lowercase: %+v", in, a)
		}
		if a.Canonical == "" || len(a.Canonical) > len(a.Normalized) {
			t.Fatalf("Parse(%q): canonical empty or longer than normalized: %+v", in, a)
		}
		b, err := Parse(a.Normalized, opt)
		if err != nil || b != a {
			t.Fatalf("not idempotent: Parse(%q) = %+v, %v; Parse(%q) = %+v", a.Normalized, b, err, in, a)
		}
		if m := Mask(in); m != a.Normalized[:1]+"***"+a.Normalized[strings.IndexByte(a.Normalized, '@'):] {
			t.Fatalf("Mask(%q) = %q for %+v", in, m, a)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"plain", "someone@example.com"},
		{"gmail", "Some.One+beta@Gmail.com"},
		{"idn", "user@bücher.de"},
		{"invalid", "John <john@example.com>"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Parse(bc.in, Options{})
			}
		})
	}
}
