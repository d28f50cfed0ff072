package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/invite"
)

// TestRetry pins the start-up retry on synctest's fake clock: an attempt
// a second (each bounded by 10s) until one succeeds or one fails more than
// 30s after the first began; a misconfiguration ends it at once.
func TestRetry(t *testing.T) {
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	errDown := errors.New("connection refused")
	for _, tc := range []struct {
		name     string
		fn       func(ctx context.Context, n int) error // n: attempts so far
		attempts int
		took     time.Duration
		err      string // "" : success
	}{
		{"succeeds on the third", func(_ context.Context, n int) error {
			if n < 3 {
				return errDown
			}
			return nil
		}, 3, 2 * time.Second, ""},
		{"gives up after 30s", func(context.Context, int) error { return errDown }, 32, 31 * time.Second, "mongodb: connection refused"},
		{"attempts that hang", func(ctx context.Context, _ int) error {
			<-ctx.Done()
			return ctx.Err()
		}, 3, 32 * time.Second, "mongodb: context deadline exceeded"},
		{"misconfigured", func(context.Context, int) error {
			return fmt.Errorf("shards: %w", invite.ErrMisconfigured)
		}, 1, 0, "shards: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := 0
				start := time.Now()
				err := retry(context.Background(), quiet, "mongodb", func(ctx context.Context) error {
					n++
					return tc.fn(ctx, n)
				})
				if took := time.Since(start); n != tc.attempts || took != tc.took {
					t.Errorf("%d attempts in %s, want %d in %s", n, took, tc.attempts, tc.took)
				}
				switch {
				case tc.err == "" && err != nil:
					t.Fatalf("err = %v, want nil", err)
				case tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)):
					t.Fatalf("err = %v, want %q…", err, tc.err)
				}
				if tc.name == "misconfigured" && !errors.Is(err, invite.ErrMisconfigured) {
					t.Fatalf("err = %v, want it to wrap invite.ErrMisconfigured", err)
				}
			})
		})
	}
	t.Run("canceled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			n := 0
			err := retry(ctx, quiet, "redis seed", func(context.Context) error {
				if n++; n == 2 {
					cancel()
				}
				return errDown
			})
			if n != 2 || err == nil || !errors.Is(err, errDown) || !strings.HasPrefix(err.Error(), "redis seed: ") {
				t.Fatalf("%d attempts, err %v; want 2 and the last error wrapped", n, err)
			}
		})
	})
}
