// Package email owns what invitegate accepts as an email address and how it
// decides that two addresses are the same person: validation, the
// normalized form that is stored and mailed, and the canonical form used as
// the "one email, one invitation" key.
//
// Only plain dot-atom addr-specs with an ASCII local part are accepted: no
// display names, angle brackets, quoted local parts, comments, IP-literal
// domains, whitespace or control characters. Those are legal in RFC 5322,
// but they are not what a person types into a signup form, and each is a way
// to smuggle header text into mail or to make two strings name one mailbox.
// Internationalized local parts (RFC 6531) are refused for the same reason:
// there is no agreed way to compare them. Internationalized domains are
// accepted and stored as punycode.
package email

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 5321 (4.5.3.1) and RFC 1035 (2.3.4).
const (
	maxLength = 254 // whole address, the usable size of a forward-path
	maxLocal  = 64
	maxDomain = 253
	maxLabel  = 63
	// maxInput bounds the work done on hostile input. It is above maxLength
	// because IDNA maps some multi-byte runes (fullwidth letters, "。") to
	// one ASCII byte, so a long raw domain can still normalize to a short one.
	maxInput = 4 * maxLength
)

// ErrInvalid is wrapped by every validation failure. The reason after it
// never contains any part of the address, so the error is safe to log.
var ErrInvalid = errors.New("invalid email address")

// The failures are made once: Parse is on the public signup path, and
// rejecting junk should not allocate.
var (
	errEmpty      = fmt.Errorf("%w: empty", ErrInvalid)
	errTooLong    = fmt.Errorf("%w: longer than %d bytes", ErrInvalid, maxLength)
	errUTF8       = fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	errShape      = fmt.Errorf("%w: want local@domain", ErrInvalid)
	errLocalLong  = fmt.Errorf("%w: local part longer than %d bytes", ErrInvalid, maxLocal)
	errLocalDot   = fmt.Errorf("%w: leading, trailing or double dot in local part", ErrInvalid)
	errLocalChar  = fmt.Errorf("%w: character not allowed in local part", ErrInvalid)
	errLocalASCII = fmt.Errorf("%w: non-ASCII local part", ErrInvalid)
	errIDN        = fmt.Errorf("%w: invalid internationalized domain", ErrInvalid)
	errDomainChar = fmt.Errorf("%w: character not allowed in domain", ErrInvalid)
	errDomainLong = fmt.Errorf("%w: domain longer than %d bytes", ErrInvalid, maxDomain)
	errDomainDot  = fmt.Errorf("%w: domain needs a dot", ErrInvalid)
	errLabel      = fmt.Errorf("%w: empty, long or badly hyphenated domain label", ErrInvalid)
	errNumericTLD = fmt.Errorf("%w: numeric top-level domain", ErrInvalid)
	errEmptyCanon = fmt.Errorf("%w: empty local part after removing dots and +tag", ErrInvalid)
)

// Options tune canonicalization.
type Options struct {
	// StripPlusAllDomains drops "+tag" from the local part for every
	// domain, not only Gmail.
	StripPlusAllDomains bool
}

// Address is a validated email.
type Address struct {
	Normalized string // trimmed, lowercased, IDN domain in punycode: what is stored for mailing
	Canonical  string // uniqueness key
}

// Parse validates raw and returns its normalized and canonical forms.
//
// raw is trimmed of surrounding white space and lowercased; the domain goes
// through IDNA (the idna.Lookup profile), so "bücher.de" becomes
// "xn--bcher-kva.de" and fullwidth or other compatibility forms map to their
// plain spelling. Canonical maps googlemail.com to gmail.com, drops dots and
// "+tag" from Gmail local parts and, with opt.StripPlusAllDomains, "+tag"
// from every local part. Canonical is a key, not a mailbox: it may not be a
// deliverable address.
//
// On failure Parse returns the zero Address and an error wrapping ErrInvalid.
func Parse(raw string, opt Options) (Address, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return Address{}, errEmpty
	}
	if len(s) > maxInput {
		return Address{}, errTooLong
	}
	if !utf8.ValidString(s) {
		return Address{}, errUTF8
	}
	// The last '@' splits: an '@' in the local part is not atext, so any
	// address with two is refused by checkLocal.
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return Address{}, errShape
	}
	local, rawDomain := s[:at], s[at+1:]
	localUpper, err := checkLocal(local)
	if err != nil {
		return Address{}, err
	}
	domain, domainSame, err := normalizeDomain(rawDomain)
	if err != nil {
		return Address{}, err
	}
	if len(local)+1+len(domain) > maxLength {
		return Address{}, errTooLong
	}

	// Most addresses arrive lowercase and ASCII: then the trimmed input
	// already is the normalized form and nothing is allocated.
	norm := s
	if localUpper || !domainSame {
		var b strings.Builder
		b.Grow(len(local) + 1 + len(domain))
		for i := 0; i < len(local); i++ {
			b.WriteByte(lowerASCII(local[i]))
		}
		b.WriteByte('@')
		for i := 0; i < len(domain); i++ {
			b.WriteByte(lowerASCII(domain[i]))
		}
		norm = b.String()
	}
	local, domain = norm[:len(local)], norm[len(local)+1:]

	canon, err := canonical(norm, local, domain, opt)
	if err != nil {
		return Address{}, err
	}
	return Address{Normalized: norm, Canonical: canon}, nil
}

// canonical derives the uniqueness key from the normalized address and its
// two halves (slices of norm). It returns norm itself when nothing changes.
func canonical(norm, local, domain string, opt Options) (string, error) {
	gmail := domain == "gmail.com" || domain == "googlemail.com"
	sameDomain := domain != "googlemail.com"
	key := local
	if gmail || opt.StripPlusAllDomains {
		if i := strings.IndexByte(key, '+'); i >= 0 {
			key = key[:i]
		}
	}
	dots := 0
	if gmail {
		dots = strings.Count(key, ".")
		domain = "gmail.com" // Google delivers googlemail.com to the same mailbox
	}
	if len(key) == dots {
		return "", errEmptyCanon
	}
	if len(key) == len(local) && dots == 0 && sameDomain {
		return norm, nil
	}
	var b strings.Builder
	b.Grow(len(key) - dots + 1 + len(domain))
	for i := 0; i < len(key); i++ {
		if !gmail || key[i] != '.' {
			b.WriteByte(key[i])
		}
	}
	b.WriteByte('@')
	b.WriteString(domain)
	return b.String(), nil
}

// checkLocal accepts an RFC 5322 dot-atom of ASCII atext and reports whether
// it holds upper-case letters, so Parse copies only when it must lowercase.
//
// It looks at bytes, not runes, before any lowercasing: strings.ToLower
// would turn the Kelvin sign (U+212A) into an ASCII 'k' and let a non-ASCII
// local part through.
func checkLocal(local string) (upper bool, err error) {
	if len(local) > maxLocal {
		return false, errLocalLong
	}
	prevDot := true // a leading dot counts as following one
	for i := 0; i < len(local); i++ {
		c := local[i]
		switch {
		case c == '.':
			if prevDot {
				return false, errLocalDot
			}
			prevDot = true
			continue
		case c >= utf8.RuneSelf:
			return false, errLocalASCII
		case atext[c]:
		default:
			return false, errLocalChar
		}
		prevDot = false
		if 'A' <= c && c <= 'Z' {
			upper = true
		}
	}
	if prevDot {
		return false, errLocalDot
	}
	return upper, nil
}

// atext is RFC 5322's atext set, as a table: the local-part check runs on
// every byte of every signup.
var atext = func() (t [utf8.RuneSelf]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+/=?^_`{|}~-" {
		t[c] = true
	}
	return t
}()

// normalizeDomain returns the domain as ASCII, to be lowercased by the
// caller, and whether d already is exactly the normalized form, so Parse can
// keep the input string instead of copying it.
//
// An ASCII domain without "xn--" labels is checked here directly: for those,
// idna.Lookup only lowercases and applies the same letter-digit-hyphen rules
// checkASCIIDomain does, and skipping it saves about 200ns and, for mixed
// case, three allocations. Everything else goes through idna.Lookup, which
// maps (lowercases, folds compatibility forms), validates Unicode labels and
// punycode, and encodes. The fuzz target checks that both paths agree.
func normalizeDomain(d string) (string, bool, error) {
	if needsIDNA(d) {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			// idna's error quotes the label: never pass it on.
			return "", false, errIDN
		}
		lower, err := checkASCIIDomain(a)
		return a, lower && a == d, err
	}
	lower, err := checkASCIIDomain(d)
	return d, lower, err
}

// NormalizeDomain returns a mail domain the way Parse stores it in an
// address: lowercase, IDN labels in punycode ("Bücher.de" becomes
// "xn--bcher-kva.de"). It returns an error wrapping ErrInvalid for what
// cannot be a mail domain.
func NormalizeDomain(d string) (string, error) {
	a, _, err := normalizeDomain(d)
	if err != nil {
		return "", err
	}
	return strings.ToLower(a), nil
}

// needsIDNA reports whether d has a non-ASCII byte or a label starting with
// an ACE prefix in any case ("xn--", "XN--"), which must be decoded to be
// validated.
func needsIDNA(d string) bool {
	start := 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] >= utf8.RuneSelf {
			return true
		}
		if i == len(d) || d[i] == '.' {
			if l := d[start:i]; len(l) >= 4 && l[2] == '-' && l[3] == '-' &&
				lowerASCII(l[0]) == 'x' && lowerASCII(l[1]) == 'n' {
				return true
			}
			start = i + 1
		}
	}
	return false
}

// checkASCIIDomain accepts a DNS host name with at least two labels of
// letters, digits and hyphens and a TLD that is not all digits (so no IPv4
// address and no IP literal), and reports whether it is all lowercase.
//
// Like IDNA's CheckHyphens, it refuses "--" in the third and fourth
// positions except for the ACE prefix "xn--": those are reserved for
// encodings (RFC 5891 4.2.3.1), and refusing them here keeps the fast path
// in normalizeDomain equal to idna.Lookup.
func checkASCIIDomain(d string) (lower bool, err error) {
	if len(d) > maxDomain {
		return false, errDomainLong
	}
	lower = true
	labels, start, digits := 0, 0, true
	for i := 0; i <= len(d); i++ {
		if i == len(d) || d[i] == '.' {
			l := d[start:i]
			if len(l) == 0 || len(l) > maxLabel || l[0] == '-' || l[len(l)-1] == '-' {
				return false, errLabel
			}
			if len(l) >= 4 && l[2] == '-' && l[3] == '-' &&
				(lowerASCII(l[0]) != 'x' || lowerASCII(l[1]) != 'n') {
				return false, errLabel
			}
			labels++
			if i < len(d) {
				start, digits = i+1, true
			}
			continue
		}
		switch c := d[i]; {
		case '0' <= c && c <= '9':
		case 'a' <= c && c <= 'z', c == '-':
			digits = false
		case 'A' <= c && c <= 'Z':
			digits, lower = false, false
		default:
			return false, errDomainChar
		}
	}
	if labels < 2 {
		return false, errDomainDot
	}
	if digits {
		return false, errNumericTLD
	}
	return lower, nil
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Mask returns a log-safe form of an address: the first character of the
// local part, "***@" and the domain, as in "j***@example.com". Anything
// Parse refuses, including text with line breaks meant to forge log lines,
// comes back as "***".
func Mask(s string) string {
	a, err := Parse(s, Options{})
	if err != nil {
		return "***"
	}
	at := strings.LastIndexByte(a.Normalized, '@')
	return a.Normalized[:1] + "***" + a.Normalized[at:]
}
