// Package email validates and canonicalizes the email addresses people
// leave on an invitation page.
//
// Parse returns two forms: Normalized (trimmed, lowercased, IDN domain in
// punycode), which is what is stored and mailed, and Canonical, the key for
// "one email, one invitation" (Gmail ignores dots and +tags, so they are
// dropped there, and optionally +tags everywhere).
//
// Only plain dot-atom addr-specs with an ASCII local part are accepted: no
// display names, quoted local parts, comments, IP-literal domains,
// whitespace or control characters. Those are legal in RFC 5322 but are not
// what a person types into a signup form, and each one is a way to make two
// strings name one mailbox.
package email

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 5321.
const (
	MaxLength      = 254
	maxLocalLength = 64
	maxDomain      = 253
	maxLabel       = 63
)

// ErrInvalid is wrapped by every validation failure. The reason after it
// never contains the address.
var ErrInvalid = errors.New("invalid email address")

// Options tune canonicalization.
type Options struct {
	// StripPlusAllDomains drops "+tag" from the local part for every
	// domain, not only Gmail.
	StripPlusAllDomains bool
}

// Address is a validated email.
type Address struct {
	Normalized string // trimmed, lowercased, IDN domain in punycode: stored for mailing
	Canonical  string // uniqueness key
}

var profile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

func invalid(reason string) error { return fmt.Errorf("%w: %s", ErrInvalid, reason) }

// Parse validates raw and returns its normalized and canonical forms, or an
// error wrapping ErrInvalid.
func Parse(raw string, opt Options) (Address, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return Address{}, invalid("empty")
	}
	if len(s) > 4*MaxLength {
		return Address{}, invalid("too long")
	}
	if !utf8.ValidString(s) {
		return Address{}, invalid("not UTF-8")
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return Address{}, invalid("want local@domain")
	}
	local, domain := strings.ToLower(s[:at]), s[at+1:]
	if err := checkLocal(local); err != nil {
		return Address{}, err
	}
	domain, err := normalizeDomain(domain)
	if err != nil {
		return Address{}, err
	}
	norm := local + "@" + domain
	if len(norm) > MaxLength {
		return Address{}, invalid("longer than 254 bytes")
	}
	canonLocal, canonDomain := local, domain
	if canonDomain == "googlemail.com" {
		canonDomain = "gmail.com"
	}
	if canonDomain == "gmail.com" || opt.StripPlusAllDomains {
		if i := strings.IndexByte(canonLocal, '+'); i >= 0 {
			canonLocal = canonLocal[:i]
		}
	}
	if canonDomain == "gmail.com" {
		canonLocal = strings.ReplaceAll(canonLocal, ".", "")
	}
	if canonLocal == "" {
		return Address{}, invalid("empty local part after canonicalization")
	}
	canon := norm
	if canonLocal != local || canonDomain != domain {
		canon = canonLocal + "@" + canonDomain
	}
	return Address{Normalized: norm, Canonical: canon}, nil
}

// checkLocal accepts an RFC 5322 dot-atom of ASCII atext.
func checkLocal(local string) error {
	if len(local) > maxLocalLength {
		return invalid("local part longer than 64 bytes")
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return invalid("misplaced dot in local part")
	}
	for i := 0; i < len(local); i++ {
		if !isAtext(local[i]) && local[i] != '.' {
			return invalid("character not allowed in local part")
		}
	}
	return nil
}

func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+/=?^_`{|}~-", c) >= 0
}

// normalizeDomain lowercases the domain, converts IDN to punycode and
// checks it is a plain DNS name with a dot and a non-numeric TLD.
func normalizeDomain(d string) (string, error) {
	ascii := true
	for i := 0; i < len(d); i++ {
		if d[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		d = strings.ToLower(d)
	} else {
		p, err := profile.ToASCII(d)
		if err != nil {
			return "", invalid("invalid internationalized domain")
		}
		d = p
	}
	if len(d) > maxDomain {
		return "", invalid("domain too long")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", invalid("domain needs a dot")
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > maxLabel || l[0] == '-' || l[len(l)-1] == '-' {
			return "", invalid("bad domain label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", invalid("character not allowed in domain")
			}
		}
	}
	tld := labels[len(labels)-1]
	if strings.Trim(tld, "0123456789") == "" {
		return "", invalid("numeric top-level domain")
	}
	return d, nil
}

// Mask returns a log-safe form of an address: the first character of the
// local part, "***@" and the domain ("j***@example.com"); "***" for
// anything that is not an address.
func Mask(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "***"
	}
	r, _ := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError {
		return "***"
	}
	return string(r) + "***@" + s[at+1:]
}
