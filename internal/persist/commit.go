package persist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/invitegate/invitegate/internal/invite"
)

// CommitterConfig tunes a Committer. Zero values take the defaults noted.
type CommitterConfig struct {
	// Batch is the most reservations one bulk insert carries (default 256).
	Batch int
	// Writers is how many bulk inserts may be under way at once (default 4).
	Writers int
	// WriteTimeout bounds one bulk insert (default 5s). A caller that stops
	// waiting earlier gets an error; the insert goes on, and the reconciler
	// finds its rows already written.
	WriteTimeout time.Duration
	// Batches, when set, observes the size of every bulk insert.
	Batches prometheus.Observer
}

// Committer writes reservations to MongoDB while their signups wait
// (INVITEGATE_ACK=mongo). Concurrent calls are coalesced into one unordered
// bulk insert (group commit): under a spike MongoDB sees one round trip per
// batch, not one per signup.
type Committer struct {
	st   *Store
	cfg  CommitterConfig
	reqs chan commitReq
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

type commitReq struct {
	ctx  context.Context
	r    invite.Reservation
	done chan commitResult // buffered: a writer never blocks on a caller that left
}

type commitResult struct {
	res Result
	err error
}

// CommitWriteTimeout is a Committer's default WriteTimeout.
const CommitWriteTimeout = 5 * time.Second

// ErrNotWritten is returned by Commit when MongoDB did not take the
// reservation in time; it may still be written later, by this batch or by
// the reconciler.
var ErrNotWritten = errors.New("registration not written to mongodb")

// NewCommitter starts the writers; Close stops them.
func NewCommitter(st *Store, cfg CommitterConfig) *Committer {
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = CommitWriteTimeout
	}
	c := &Committer{st: st, cfg: cfg, reqs: make(chan commitReq, cfg.Batch*cfg.Writers), stop: make(chan struct{})}
	for i := 0; i < cfg.Writers; i++ {
		c.wg.Add(1)
		go c.write()
	}
	return c
}

// Commit writes r as a registration and returns its Result (Written,
// AlreadyWritten, Conflict or Refused). It returns an error wrapping ErrNotWritten
// when MongoDB did not confirm the write before ctx ended, or ErrDatabase
// when MongoDB failed.
func (c *Committer) Commit(ctx context.Context, r invite.Reservation) (Result, error) {
	req := commitReq{ctx: ctx, r: r, done: make(chan commitResult, 1)}
	select {
	case c.reqs <- req:
	case <-c.stop:
		return Result{}, fmt.Errorf("%w: the committer is closed", ErrNotWritten)
	case <-ctx.Done():
		return Result{}, errors.Join(ErrNotWritten, ctx.Err())
	}
	select {
	case out := <-req.done:
		if out.err == nil && out.res.Outcome == Failed {
			out.err = ErrNotWritten
		}
		return out.res, out.err
	case <-ctx.Done():
		return Result{}, errors.Join(ErrNotWritten, ctx.Err())
	}
}

// Close stops the writers once the calls already queued are written;
// later calls fail at once. Closing twice is harmless.
func (c *Committer) Close() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}

func (c *Committer) write() {
	defer c.wg.Done()
	batch := make([]commitReq, 0, c.cfg.Batch)
	rows := make([]invite.Reservation, 0, c.cfg.Batch)
	for {
		batch, rows = batch[:0], rows[:0]
		select {
		case req := <-c.reqs:
			batch = append(batch, req)
		case <-c.stop:
			select {
			case req := <-c.reqs:
				batch = append(batch, req)
			default:
				return
			}
		}
	fill:
		for len(batch) < c.cfg.Batch {
			select {
			case req := <-c.reqs:
				batch = append(batch, req)
			default:
				break fill
			}
		}
		// A caller that gave up has answered 503; its reservation is
		// the reconciler's to write.
		live := batch[:0]
		for _, req := range batch {
			if req.ctx.Err() == nil {
				live = append(live, req)
				rows = append(rows, req.r)
			}
		}
		if len(live) == 0 {
			continue
		}
		if c.cfg.Batches != nil {
			c.cfg.Batches.Observe(float64(len(rows)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.WriteTimeout)
		results, err := c.st.Persist(ctx, rows)
		cancel()
		for i, req := range live {
			if err != nil {
				req.done <- commitResult{err: err}
				continue
			}
			req.done <- commitResult{res: results[i]}
		}
	}
}
