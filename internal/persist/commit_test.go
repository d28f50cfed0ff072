package persist_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestCommitterGroupCommit: 200 concurrent commits against the real
// MongoDB-wire server are all written, each reported once, in fewer bulk
// inserts than commits; repeats and conflicts are told apart.
func TestCommitterGroupCommit(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	createCodes(t, st, "a", "b")
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "batch"})
	c := persist.NewCommitter(st, persist.CommitterConfig{Writers: 2, Batches: hist})
	defer c.Close()

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			em := fmt.Sprintf("g%d@example.com", i)
			res, err := c.Commit(ctx, invite.Reservation{Code: "a", Canonical: em, Email: em, ReservedAt: time.Now()})
			if err != nil || res.Outcome != persist.Written {
				errs <- fmt.Errorf("%s: %+v %v", em, res, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, _ := st.Count(ctx, "a"); got != n {
		t.Fatalf("%d registrations, want %d", got, n)
	}
	var pb dto.Metric
	if err := hist.Write(&pb); err != nil {
		t.Fatal(err)
	}
	inserts, rows := pb.GetHistogram().GetSampleCount(), pb.GetHistogram().GetSampleSum()
	t.Logf("%d commits in %d bulk inserts", n, inserts)
	if inserts >= n || rows != n {
		t.Fatalf("%d bulk inserts carrying %v rows for %d commits; want fewer inserts than commits", inserts, rows, n)
	}

	again, err := c.Commit(ctx, invite.Reservation{Code: "a", Canonical: "g1@example.com", Email: "g1@example.com"})
	if err != nil || again.Outcome != persist.AlreadyWritten {
		t.Fatalf("repeat: %+v %v, want AlreadyWritten", again, err)
	}
	other, err := c.Commit(ctx, invite.Reservation{Code: "b", Canonical: "g1@example.com", Email: "g1@example.com"})
	if err != nil || other.Outcome != persist.Conflict || other.Owner != "a" {
		t.Fatalf("other code: %+v %v, want Conflict owned by a", other, err)
	}
}

// TestCommitterGivesUpAtDeadline: with MongoDB unreachable, a caller gets
// ErrNotWritten when its own deadline passes, not when the bulk insert's
// much longer timeout does; a caller whose context is already done is
// refused at once.
func TestCommitterGivesUpAtDeadline(t *testing.T) {
	c, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + testenv.FreeAddr(t)).SetServerSelectionTimeout(3 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	cm := persist.NewCommitter(persist.NewStore(c.Database("x"), nil, nil), persist.CommitterConfig{WriteTimeout: 3 * time.Second})
	defer cm.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = cm.Commit(ctx, invite.Reservation{Code: "a", Canonical: "x@example.com"})
	if !errors.Is(err, persist.ErrNotWritten) {
		t.Fatalf("err = %v, want ErrNotWritten", err)
	}
	// The insert itself waits 3s for a server; the caller must not.
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Commit returned after %s; its deadline was 200ms", took)
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := cm.Commit(done, invite.Reservation{Code: "a", Canonical: "y@example.com"}); !errors.Is(err, persist.ErrNotWritten) {
		t.Fatalf("done context: err = %v, want ErrNotWritten", err)
	}
}

// TestPersistSameEmailTwiceInOneBatch: a double submit can put one email
// in a batch more than once; every copy is reported, none left Failed.
func TestPersistSameEmailTwiceInOneBatch(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	createCodes(t, st, "a")
	d := invite.Reservation{Code: "a", Canonical: "d@example.com", Email: "d@example.com"}
	for _, round := range []string{"fresh", "stored"} {
		out, err := st.Persist(ctx, []invite.Reservation{d, d, d})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range out {
			if r.Outcome == persist.Failed || (round == "stored" && r.Outcome != persist.AlreadyWritten) {
				t.Fatalf("%s batch: item %d is %v", round, i, r.Outcome)
			}
		}
	}
}
