package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// implementation builds one reservation path over a fresh MongoDB
// database (the truth every path seeds from or writes to).
type implementation struct {
	name string
	new  func(tb testing.TB, st *persist.Store) invite.Reserver
	// durable: MongoDB holds a signup before it is answered.
	durable bool
}

func redisPath(cluster bool, shards int, mongoAck bool) func(testing.TB, *persist.Store) invite.Reserver {
	return func(tb testing.TB, st *persist.Store) invite.Reserver {
		var rdb redis.UniversalClient
		if cluster {
			rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.SharedRedisCluster(tb)})
		} else {
			rdb = redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(tb)})
		}
		tb.Cleanup(func() { rdb.Close() })
		res := workflow.NewSignups(reserve.New(rdb, reserve.Config{Namespace: testenv.KeyPrefix(tb), Shards: shards}), st, workflow.SignupsConfig{})
		if !mongoAck {
			return res
		}
		commit := persist.NewCommitter(st, persist.CommitterConfig{})
		tb.Cleanup(commit.Close)
		return workflow.NewMongoAck(res, st, commit, 5*time.Second, nil)
	}
}

// implementations are every reservation path the service can run.
var implementations = []implementation{
	{"redis/K=1", redisPath(false, 1, false), false},
	{"redis/K=16", redisPath(false, 16, false), false},
	{"cluster/K=1", redisPath(true, 1, false), false},
	{"cluster/K=16", redisPath(true, 16, false), false},
	{"redis/K=16/ack=mongo", redisPath(false, 16, true), true},
	{"cluster/K=16/ack=mongo", redisPath(true, 16, true), true},
	{"mongo", func(tb testing.TB, st *persist.Store) invite.Reserver {
		m := persist.NewMongoReserver(st)
		if err := m.EnsureSchema(context.Background()); err != nil {
			tb.Fatal(err)
		}
		return m
	}, true},
}

// TestReserverContract runs one table of answers against every
// reservation path on real servers: the outcomes and sentinel errors the
// HTTP API maps to statuses are the same whichever path a deployment runs.
func TestReserverContract(t *testing.T) {
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			ctx := context.Background()
			st := newStore(t)
			for _, inv := range []invite.Invitation{
				{Code: "two", MaxUses: 2},
				{Code: "other", MaxUses: 5},
				{Code: "off", MaxUses: 5, Disabled: true},
				{Code: "old", MaxUses: 5, ExpiresAt: time.Now().Add(-time.Hour)},
			} {
				if err := st.CreateInvitation(ctx, inv); err != nil {
					t.Fatal(err)
				}
			}
			r := impl.new(t, st)

			steps := []struct {
				code, email string
				want        invite.Outcome
				wantErr     error
			}{
				{"two", "a@example.com", invite.Created, nil},
				{"two", "A@Example.com", invite.Existing, nil}, // the same canonical email
				{"other", "a@example.com", 0, invite.ErrEmailTaken},
				{"two", "b@example.com", invite.Created, nil},
				{"two", "c@example.com", 0, invite.ErrFull},
				{"two", "b@example.com", invite.Existing, nil}, // a repeat on a full code
				{"off", "d@example.com", 0, invite.ErrDisabled},
				{"old", "d@example.com", 0, invite.ErrExpired},
				{"nope", "d@example.com", 0, invite.ErrUnknownCode},
				{"bad code!", "d@example.com", 0, invite.ErrUnknownCode},
				{"other", "d@example.com", invite.Created, nil},
			}
			for i, s := range steps {
				a, err := email.Parse(s.email, email.Options{})
				if err != nil {
					t.Fatal(err)
				}
				res, err := r.Reserve(ctx, s.code, a)
				if s.wantErr != nil {
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: %s on %s: %+v, %v; want %v", i, s.email, s.code, res, err, s.wantErr)
					}
					continue
				}
				if err != nil || res.Outcome != s.want {
					t.Fatalf("step %d: %s on %s: %+v, %v; want outcome %d", i, s.email, s.code, res, err, s.want)
				}
				if impl.durable {
					reg, ok, err := st.Registration(ctx, a.Canonical)
					if err != nil || !ok || reg.Invitation != s.code {
						t.Fatalf("step %d: answered %d, but MongoDB holds %+v (found %v, %v)", i, res.Outcome, reg, ok, err)
					}
				}
			}

			for code, want := range map[string]invite.Status{
				"two": invite.StatusFull, "other": invite.StatusOpen,
				"off": invite.StatusDisabled, "old": invite.StatusExpired,
			} {
				if got, err := r.Status(ctx, code); err != nil || got != want {
					t.Errorf("status of %s: %q, %v; want %q", code, got, err, want)
				}
			}
			if _, err := r.Status(ctx, "nope"); !errors.Is(err, invite.ErrUnknownCode) {
				t.Errorf("status of an unknown code: %v, want ErrUnknownCode", err)
			}
		})
	}
}

func newStore(tb testing.TB) *persist.Store {
	tb.Helper()
	st := persist.NewStore(testenv.MongoDatabase(tb), nil, nil)
	if err := st.EnsureSchema(context.Background()); err != nil {
		tb.Fatal(fmt.Errorf("schema: %w", err))
	}
	return st
}
