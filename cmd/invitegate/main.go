// Command invitegate runs the signup service: `invitegate serve` for the
// public API (with the reconciler), `invitegate reconcile` for the
// reconciler alone. Configuration is documented in the README.
package main

import (
	"context"
	"os"

	"github.com/invitegate/invitegate/internal/app"
)

func main() {
	os.Exit(app.Command(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
