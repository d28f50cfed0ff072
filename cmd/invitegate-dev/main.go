// Command invitegate-dev runs invitegate with nothing installed: an
// in-process Redis (miniredis) and an embedded MongoDB-wire server
// (FerretDB on SQLite under ./.data), seeded with three invitations. It is
// what `make run` starts. The production binary, cmd/invitegate, links
// neither.
//
// Data: MongoDB's files live in INVITEGATE_DEV_DATA (default ./.data), so
// signups survive a restart; Redis lives in memory and is reseeded from
// MongoDB at every start, exactly as a production replica does after a
// Redis wipe.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/embedded"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// demo invitations created on first start.
var demo = []invite.Invitation{
	{Code: "twitter-reg1", MaxUses: 1000},
	// A newcomer sees the confirmation loop on this one: 202, the email
	// with its link (printed too), the confirm page, 201.
	{Code: "telegram-test", MaxUses: 100, ConfirmWindow: 10 * time.Minute},
	{Code: "instagram-hello", MaxUses: 10},
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"serve"}
	}
	dir := getenv("INVITEGATE_DEV_DATA")
	if dir == "" {
		dir = ".data"
	}
	dir, err := filepath.Abs(filepath.Join(dir, "mongo"))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintf(stderr, "invitegate-dev: data directory: %v\n", err)
		return 1
	}

	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		fmt.Fprintf(stderr, "invitegate-dev: miniredis: %v\n", err)
		return 1
	}
	defer mr.Close()
	fctx, stopFerret := context.WithCancel(ctx)
	uri, stop, err := embedded.StartFerretDB(fctx, dir, "127.0.0.1:0", nil)
	if err != nil {
		stopFerret()
		fmt.Fprintf(stderr, "invitegate-dev: embedded MongoDB-wire server: %v\n", err)
		return 1
	}
	defer func() { stop(); stopFerret() }()

	mailDir := filepath.Join(filepath.Dir(dir), "mail")
	mb, err := startMailbox(mailDir, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "invitegate-dev: mail catcher: %v\n", err)
		return 1
	}
	defer mb.Close()

	// The dev defaults apply only where the environment says nothing.
	defaults := map[string]string{
		"INVITEGATE_REDIS_ADDRS":     mr.Addr(),
		"INVITEGATE_MONGO_URI":       uri,
		"INVITEGATE_LOG_FORMAT":      "text",
		"INVITEGATE_SHUTDOWN_GRACE":  "0s",
		"INVITEGATE_REDIS_CLUSTER":   "false",
		"INVITEGATE_REDIS_NAMESPACE": reserve.DefaultNamespace,
		"INVITEGATE_SMTP_ADDR":       mb.addr,
		"INVITEGATE_SMTP_TLS":        "none",
	}
	// Confirmation links: a secret kept with the data, so links sent
	// before a restart still work.
	secret, err := devSecret(filepath.Join(filepath.Dir(dir), "confirm-secret"))
	if err != nil {
		fmt.Fprintf(stderr, "invitegate-dev: confirmation secret: %v\n", err)
		return 1
	}
	defaults["INVITEGATE_CONFIRM_SECRET"] = secret
	env := func(k string) string {
		if k == "INVITEGATE_REDIS_ADDRS" || k == "INVITEGATE_MONGO_URI" || k == "INVITEGATE_REDIS_CLUSTER" {
			return defaults[k] // the embedded servers, always
		}
		if v := getenv(k); v != "" {
			return v
		}
		return defaults[k]
	}

	cfg, err := config.Load("invitegate-dev", args[1:], env, io.Discard)
	if err == nil {
		err = seedDemo(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "invitegate-dev: %v\n", err)
		return 2
	}
	host := cfg.HTTPAddr
	if len(host) > 0 && host[0] == ':' {
		host = "localhost" + host
	}
	// The links in the confirmation emails point at this process.
	defaults["INVITEGATE_PUBLIC_URL"] = "http://" + host
	admin := cfg.AdminAddr
	if len(admin) > 0 && admin[0] == ':' {
		admin = "localhost" + admin
	}
	fmt.Fprintf(stdout, `
invitegate (dev): embedded Redis (miniredis) and MongoDB-wire server (FerretDB, data in %s)
  Page     http://%s/invitations/twitter-reg1   (open it in a browser)
  API      http://%s/invitations/{code}     codes: twitter-reg1 (1000), telegram-test (100, confirm by email within 10 min), instagram-hello (10)
  admin    http://%s/livez  /readyz  /metrics
  Redis    %s   MongoDB %s   (database %q)
  Mail     every email is saved as an .eml file in %s (confirmation links are printed here too)

Try:
  curl -i -X POST http://%s/invitations/twitter-reg1 -H 'Content-Type: application/json' -d '{"email":"you@example.com"}'

Administer it from another terminal while it runs:
  INVITEGATE_REDIS_ADDRS=%s INVITEGATE_MONGO_URI=%s go run ./cmd/invitectl list

`, dir, host, host, admin, mr.Addr(), uri, cfg.MongoDB, mailDir, host, mr.Addr(), uri)
	return app.Command(ctx, args, env, stdout, stderr)
}

// devSecret returns the confirmation secret stored in file, creating it
// (32 random bytes, hex) on first use.
func devSecret(file string) (string, error) {
	if b, err := os.ReadFile(file); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), nil
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", err
	}
	return secret, os.WriteFile(file, []byte(secret+"\n"), 0o600)
}

// seedDemo creates the demo invitations unless they exist.
func seedDemo(ctx context.Context, cfg config.Config) error {
	mc, err := app.NewMongo(cfg)
	if err != nil {
		return err
	}
	defer mc.Disconnect(context.Background())
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st := persist.NewStore(mc.Database(cfg.MongoDB), nil, nil)
	for _, inv := range demo {
		if err := st.CreateInvitation(ctx, inv); err != nil && !errors.Is(err, persist.ErrExists) {
			return fmt.Errorf("create demo invitation %s: %w", inv.Code, err)
		}
	}
	return nil
}
