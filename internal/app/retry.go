package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/invite"
)

// retry runs fn (each call bounded by 10s) until it succeeds, once a
// second for up to 30s, so a process started just before its dependencies
// does not crash-loop. A misconfiguration is returned at once, as it is;
// any other failure is returned wrapped with what.
func retry(ctx context.Context, log logrus.FieldLogger, what string, fn func(context.Context) error) error {
	const every, bound = time.Second, 30 * time.Second
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		last = fn(cctx)
		if errors.Is(last, invite.ErrMisconfigured) {
			return struct{}{}, backoff.Permanent(last)
		}
		return struct{}{}, last
	},
		backoff.WithBackOff(backoff.NewConstantBackOff(every)),
		// Retry stops when the next wait would end past the bound; one
		// more wait lets the last attempt start up to bound after the first.
		backoff.WithMaxElapsedTime(bound+every),
		backoff.WithNotify(func(err error, _ time.Duration) {
			log.WithError(err).Warnf("%s not ready; retrying", what)
		}))
	switch {
	case err == nil:
		return nil
	case errors.Is(last, invite.ErrMisconfigured):
		return last
	default:
		return fmt.Errorf("%s: %w", what, last)
	}
}
