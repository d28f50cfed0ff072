// Package embedded starts FerretDB's embeddable MongoDB-wire server on
// SQLite, for tests and for `make run`. The production binary never
// imports it.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// StartFerretDB starts FerretDB with its SQLite backend storing databases
// under dir (created if missing), listening on TCP addr ("127.0.0.1:0" picks
// a port). It returns the mongodb:// URI and a stop function that shuts the
// server down and waits for it. A nil logger keeps FerretDB quiet below
// warnings.
func StartFerretDB(ctx context.Context, dir, addr string, logger *slog.Logger) (uri string, stop func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("ferretdb data dir: %w", err)
	}
	// FerretDB's listener panics on a busy port instead of returning an
	// error, so check the port first.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("ferretdb listen: %w", err)
	}
	ln.Close()
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
	})
	if err != nil {
		return "", nil, fmt.Errorf("ferretdb: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(rctx) }()
	uriC := make(chan string, 1)
	go func() { uriC <- f.MongoDBURI() }()
	select {
	case uri = <-uriC:
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped before listening")
		}
		return "", nil, fmt.Errorf("ferretdb: %w", err)
	}
	stop = func() {
		cancel()
		<-done
	}
	return uri, stop, nil
}
