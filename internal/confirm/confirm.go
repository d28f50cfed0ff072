// Package confirm makes and opens the tokens of confirmation links. A
// token names one hold (the code, the hold's ID, the canonical email and
// the address as entered, which the registration keeps)
// and is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from
// INVITEGATE_CONFIRM_SECRET: only a holder of the secret can make one, a
// changed byte makes it invalid, and it carries the email encrypted, so a
// link in a log or a proxy's URL list tells nobody the address. Nothing is
// stored: MongoDB and Redis know the hold, never its token.
package confirm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// MinSecretLen is the shortest secret accepted (32 bytes: e.g. the output
// of `openssl rand -hex 32` is 64).
const MinSecretLen = 32

// ErrInvalid means the token was not made by this secret, was changed, or
// is malformed.
var ErrInvalid = errors.New("confirm: invalid token")

// Hold is what a token names.
type Hold struct {
	Code, HoldID, Canonical, Email string
}

// Sealer makes and opens tokens under one secret. Safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// New returns a Sealer for secret (at least MinSecretLen bytes).
func New(secret string) (*Sealer, error) {
	if len(secret) < MinSecretLen {
		return nil, errors.New("INVITEGATE_CONFIRM_SECRET must be at least 32 characters (e.g. `openssl rand -hex 32`)")
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, "invitegate confirmation token v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// sep cannot occur in a code, a stream entry ID or a canonical email
// (email.Parse refuses control characters).
const sep = "\x00"

// Seal returns a token for h: base64url (no padding) of a random nonce and
// the sealed hold. Each call returns another token for the same hold; all
// of them open to it.
func (s *Sealer) Seal(h Hold) string {
	plain := []byte(h.Code + sep + h.HoldID + sep + h.Canonical + sep + h.Email)
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, nil))
}

// MaxTokenLen bounds the tokens Open reads: a code of 64, a stream ID and
// two addresses of 254 bytes sealed are well below it.
const MaxTokenLen = 1024

// Open returns the hold token names, or ErrInvalid.
func (s *Sealer) Open(token string) (Hold, error) {
	if len(token) > MaxTokenLen {
		return Hold{}, ErrInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return Hold{}, ErrInvalid
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], nil)
	if err != nil {
		return Hold{}, ErrInvalid
	}
	parts := strings.Split(string(plain), sep)
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return Hold{}, ErrInvalid
	}
	return Hold{Code: parts[0], HoldID: parts[1], Canonical: parts[2], Email: parts[3]}, nil
}
