// Command invitegate runs the signup service: `invitegate serve` for the
// public API (with the reconciler, and the mailer when enabled),
// `invitegate reconcile` for the reconciler alone, `invitegate mail` for
// the further-instructions mailer alone. Configuration is documented in the
// README; the process is wired in internal/app.
package main

import (
	"context"
	"os"

	"github.com/invitegate/invitegate/internal/app"
)

func main() {
	os.Exit(app.Command(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
