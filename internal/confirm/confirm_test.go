package confirm_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/invitegate/invitegate/internal/confirm"
)

const secret = "0123456789abcdef0123456789abcdef"

func sealer(t *testing.T, secret string) *confirm.Sealer {
	t.Helper()
	s, err := confirm.New(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	s := sealer(t, secret)
	h := confirm.Hold{Code: "twitter-reg1", HoldID: "1733570000000-0", Canonical: "someonelong@example.com", Email: "Someone.Long+tag@example.com"}
	tok := s.Seal(h)
	got, err := s.Open(tok)
	if err != nil || got != h {
		t.Fatalf("Open(Seal(h)) = %+v, %v; want %+v", got, err, h)
	}
	if again := s.Seal(h); again == tok {
		t.Fatal("two seals of one hold gave the same token: the nonce is not random")
	}
	if strings.ContainsAny(tok, "+/=") || len(tok) > confirm.MaxTokenLen {
		t.Fatalf("token %q is not URL-safe base64 within %d", tok, confirm.MaxTokenLen)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	if strings.Contains(string(raw), "omeone") || strings.Contains(string(raw), "twitter") {
		t.Fatal("the token carries the email or code in clear")
	}
}

func TestInvalidTokens(t *testing.T) {
	s := sealer(t, secret)
	tok := s.Seal(confirm.Hold{Code: "c", HoldID: "1-0", Canonical: "a@example.com", Email: "a@example.com"})
	other := sealer(t, strings.Repeat("z", 40))
	flip := []byte(tok)
	flip[len(flip)/2] ^= 1
	if flip[len(flip)/2] == '-' || flip[len(flip)/2] == '_' {
		flip[len(flip)/2] = 'A'
	}
	cases := map[string]string{
		"empty":        "",
		"not base64":   "!!!!",
		"short":        tok[:10],
		"tampered":     string(flip),
		"truncated":    tok[:len(tok)-2],
		"extended":     tok + "AA",
		"other secret": other.Seal(confirm.Hold{Code: "c", HoldID: "1-0", Canonical: "a@example.com", Email: "a@example.com"}),
		"too long":     strings.Repeat("A", confirm.MaxTokenLen+1),
	}
	for name, bad := range cases {
		if h, err := s.Open(bad); !errors.Is(err, confirm.ErrInvalid) {
			t.Errorf("%s: Open = %+v, %v; want ErrInvalid", name, h, err)
		}
	}
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := confirm.New(strings.Repeat("x", confirm.MinSecretLen-1)); err == nil {
		t.Fatal("a 31-byte secret was accepted")
	}
}
