package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/invitegate/invitegate/internal/config"
)

const usage = `invitegate: invitation-gated signups.

Usage:
  invitegate serve     [flags]   public API, admin listener and (by default) the reconciler
  invitegate reconcile [flags]   only the reconciler and the admin listener
  invitegate mail      [flags]   only the mailer (further-instructions emails) and the admin listener
  invitegate probe [URL]         exit 0 if URL (default http://127.0.0.1:9090/readyz) answers 200;
                                 a health check for images without curl
  invitegate help

Every flag also reads an INVITEGATE_* environment variable; run
"invitegate serve -h" for the list. Flags win over the environment.
`

// Command runs the invitegate command line and returns the exit code:
// 0 clean exit, 1 runtime failure, 2 bad usage or configuration.
func Command(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var mode Mode
	switch args[0] {
	case "serve":
		mode = Serve
	case "reconcile":
		mode = Reconcile
	case "mail":
		mode = Mail
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "probe":
		return probe(ctx, args[1:], getenv, stderr)
	default:
		fmt.Fprintf(stderr, "invitegate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	cfg, err := config.Load("invitegate "+args[0], args[1:], getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "invitegate: configuration: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := &Main{Config: cfg, Mode: mode}
	if err := m.Open(ctx); err != nil {
		m.Logger.WithError(err).Error("startup failed")
		m.Close()
		return 1
	}
	if err := m.Run(ctx); err != nil {
		return 1
	}
	return 0
}

// probe GETs a readiness URL: by default the admin listener of this
// host's INVITEGATE_ADMIN_ADDR port.
func probe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	url := "http://127.0.0.1:9090/readyz"
	if a := getenv("INVITEGATE_ADMIN_ADDR"); a != "" {
		if _, port, err := net.SplitHostPort(a); err == nil {
			url = "http://127.0.0.1:" + port + "/readyz"
		}
	}
	if len(args) > 1 {
		fmt.Fprintln(stderr, "invitegate probe: want at most one URL")
		return 2
	}
	if len(args) == 1 {
		url = args[0]
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "invitegate probe: %v\n", err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "invitegate probe: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "invitegate probe: %s answered %d\n", url, resp.StatusCode)
		return 1
	}
	return 0
}
