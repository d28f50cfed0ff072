package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
)

const usage = `invitegate: invitation-gated signups.

Usage:
  invitegate serve     [flags]   public API, admin listener and (by default) the reconciler
  invitegate reconcile [flags]   only the reconciler and the admin listener
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
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "invitegate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	cfg, err := LoadConfig("invitegate "+args[0], args[1:], getenv, stderr)
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
