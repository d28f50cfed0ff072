// Package embedded starts FerretDB's embeddable MongoDB-wire server on its
// SQLite backend, for tests (through internal/testenv) and for the dev
// binary (cmd/invitegate-dev). The production binary never imports it.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// StartFerretDB starts FerretDB with the "sqlite" handler, keeping one
// SQLite file per database under dir (created if missing), and listening on
// TCP addr ("127.0.0.1:0" picks a free port).
//
// It returns the mongodb:// URI clients connect to and a stop function that
// shuts the server down and waits until it has. stop is safe to call more
// than once; it can take up to about 3 seconds when clients are still
// connected, because FerretDB gives them that long to finish. Canceling ctx
// also shuts the server down, but only stop waits for it.
//
// A nil logger logs FerretDB's warnings and errors to stderr and drops the
// rest (it logs every connection at info level). It also drops the warning
// pair FerretDB logs for every command answered with ok:0 (the client gets
// that error anyway), which would otherwise dump two messages each time a
// Go driver disconnects, because FerretDB lacks endSessions.
//
// On failure (dir not creatable, addr not bindable, backend not opening) it
// returns the error, nothing keeps running and stop is nil. Calls must not
// overlap: ferretdb.New writes package-level state.
func StartFerretDB(ctx context.Context, dir, addr string, logger *slog.Logger) (uri string, stop func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("ferretdb data dir: %w", err)
	}
	if logger == nil {
		logger = slog.New(quietHandler{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})})
	}

	// New binds the TCP listener itself, so a busy port is an error here
	// rather than a hang in MongoDBURI.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
	})
	if err != nil {
		return "", nil, fmt.Errorf("ferretdb on %s: %w", addr, err)
	}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(rctx) }()

	// MongoDBURI blocks until the listener is ready. With the listener bound
	// in New that is immediate, but if a FerretDB upgrade moves binding into
	// Run, an early return from Run must still not leave us waiting forever.
	uriC := make(chan string, 1)
	go func() { uriC <- f.MongoDBURI() }()
	select {
	case uri = <-uriC:
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped before listening")
		}
		return "", nil, fmt.Errorf("ferretdb on %s: %w", addr, err)
	}

	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	return uri, stop, nil
}

// quietHandler drops FerretDB's warning-level dumps of failed command
// responses; everything else reaches the wrapped handler.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn &&
		(strings.HasPrefix(r.Message, "Response header:") || strings.HasPrefix(r.Message, "Response message:")) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(attrs)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}
