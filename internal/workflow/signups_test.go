package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// memSource is MongoDB as seeding reads it, in memory.
type memSource struct {
	mu      sync.Mutex
	invs    map[string]invite.Invitation
	regs    map[string]string // canonical -> code
	holds   []persist.Hold
	lookups atomic.Int64 // Invitation and Invitations calls
}

func newSource(invs ...invite.Invitation) *memSource {
	s := &memSource{invs: map[string]invite.Invitation{}, regs: map[string]string{}}
	for _, i := range invs {
		s.invs[i.Code] = i
	}
	return s
}

// add creates an invitation, as an admin does in MongoDB.
func (s *memSource) add(inv invite.Invitation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invs[inv.Code] = inv
}

// register writes a registration, as the reconciler does.
func (s *memSource) register(canonical, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.regs[canonical] = code
}

// hold records a hold, as the reconciler does.
func (s *memSource) hold(h persist.Hold) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds = append(s.holds, h)
}

func (s *memSource) LiveHolds(_ context.Context, code string, now time.Time) ([]persist.Hold, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []persist.Hold
	for _, h := range s.holds {
		if _, registered := s.regs[h.Canonical]; (code == "" || h.Invitation == code) && h.State == persist.HoldHeld && h.Deadline.After(now) && !registered {
			out = append(out, h)
		}
	}
	return out, nil
}

func (s *memSource) Invitation(_ context.Context, code string) (invite.Invitation, bool, error) {
	s.lookups.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.invs[code]
	return i, ok, nil
}

func (s *memSource) Invitations(context.Context) ([]invite.Invitation, error) {
	s.lookups.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []invite.Invitation
	for _, i := range s.invs {
		out = append(out, i)
	}
	return out, nil
}

func (s *memSource) ForEachRegistration(_ context.Context, code string, fn func(string, string) error) error {
	s.mu.Lock()
	regs := make(map[string]string, len(s.regs))
	for k, v := range s.regs {
		regs[k] = v
	}
	s.mu.Unlock()
	for k, c := range regs {
		if code == "" || c == code {
			if err := fn(k, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// redisClients are the Redis deployments seeding runs against: a real
// single node, a real 3-node cluster, and miniredis (the -short tier).
var redisClients = []struct {
	name  string
	short bool
	new   func(testing.TB) redis.UniversalClient
}{
	{"redis", false, func(tb testing.TB) redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(tb)})
	}},
	{"cluster", false, func(tb testing.TB) redis.UniversalClient {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.SharedRedisCluster(tb)})
	}},
	{"miniredis", true, func(tb testing.TB) redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: miniredis.RunT(tb).Addr()})
	}},
}

func client(tb testing.TB, i int) redis.UniversalClient {
	c := redisClients[i].new(tb)
	tb.Cleanup(func() { c.Close() })
	return c
}

// TestSeedOnDemand: a fresh Redis is seeded by the first signup; a code
// created in MongoDB later is seeded by the first request for it, the
// landing page's status included; unknown and invalid codes are refused;
// registrations in MongoDB come back as claims.
func TestSeedOnDemand(t *testing.T) {
	for i, rc := range redisClients {
		for _, k := range []int{1, 16} {
			t.Run(fmt.Sprintf("%s/K=%d", rc.name, k), func(t *testing.T) {
				ctx := context.Background()
				now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
				src := newSource(invite.Invitation{Code: "x", MaxUses: 2}, invite.Invitation{Code: "y", MaxUses: 5})
				src.register(testenv.Address(t, "old@example.com").Canonical, "y")
				res := reserve.New(client(t, i), reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: k})
				s := workflow.NewSignups(res, src, workflow.SignupsConfig{Now: func() time.Time { return now }})
				if ok, err := res.Seeded(ctx); err != nil || ok {
					t.Fatalf("seeded before any request: %v, %v", ok, err)
				}
				if r, err := s.Reserve(ctx, "x", testenv.Address(t, "a@example.com")); err != nil || r.Outcome != invite.Created {
					t.Fatalf("first signup: %v, %v; want Created", r.Outcome, err)
				}
				if ok, err := res.Seeded(ctx); err != nil || !ok {
					t.Fatalf("seeded after the first request: %v, %v", ok, err)
				}
				if _, err := s.Reserve(ctx, "x", testenv.Address(t, "old@example.com")); !errors.Is(err, invite.ErrEmailTaken) {
					t.Fatalf("an email MongoDB holds on y, on x: %v; want ErrEmailTaken", err)
				}
				for _, code := range []string{"nope", "bad/code"} {
					if _, err := s.Reserve(ctx, code, testenv.Address(t, "b@example.com")); !errors.Is(err, invite.ErrUnknownCode) {
						t.Fatalf("%s: %v; want ErrUnknownCode", code, err)
					}
					if _, err := s.Status(ctx, code); !errors.Is(err, invite.ErrUnknownCode) {
						t.Fatalf("status of %s: %v; want ErrUnknownCode", code, err)
					}
				}
				src.add(invite.Invitation{Code: "late", MaxUses: 1})
				now = now.Add(time.Hour) // past the unknown-code snapshot
				if st, err := s.Status(ctx, "late"); err != nil || st != invite.StatusOpen {
					t.Fatalf("status of a code created later: %q, %v; want open", st, err)
				}
				if r, err := s.Reserve(ctx, "late", testenv.Address(t, "c@example.com")); err != nil || r.Outcome != invite.Created {
					t.Fatalf("a code created later: %v, %v; want Created", r.Outcome, err)
				}
				if st, err := s.Status(ctx, "late"); err != nil || st != invite.StatusFull {
					t.Fatalf("status once taken: %q, %v; want full", st, err)
				}
			})
		}
	}
}

// TestSeedConcurrentNeverDoubles: many seeders at once (replicas starting
// together) create each bucket once; the remaining capacity equals max_uses
// minus what MongoDB holds, and claims come back from MongoDB.
func TestSeedConcurrentNeverDoubles(t *testing.T) {
	for i, rc := range redisClients[:2] {
		for _, k := range []int{1, 16} {
			t.Run(fmt.Sprintf("%s/K=%d", rc.name, k), func(t *testing.T) {
				ctx := context.Background()
				src := newSource(invite.Invitation{Code: "sd", MaxUses: 100}, invite.Invitation{Code: "other", MaxUses: 10})
				for i := 0; i < 30; i++ {
					src.register(fmt.Sprintf("p%d@example.com", i), "sd")
				}
				c := client(t, i)
				ns := testenv.KeyPrefix(t)
				var wg sync.WaitGroup
				errs := make(chan error, 8)
				for i := 0; i < 8; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						s := workflow.NewSignups(reserve.New(c, reserve.Config{Namespace: ns, Shards: k}), src, workflow.SignupsConfig{})
						if i%2 == 0 {
							errs <- s.SeedAll(ctx)
						} else {
							errs <- s.SeedCode(ctx, "sd")
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				res := reserve.New(c, reserve.Config{Namespace: ns, Shards: k})
				s := workflow.NewSignups(res, src, workflow.SignupsConfig{})
				rem, _, err := res.Remaining(ctx, "sd")
				if err != nil || rem != 70 {
					t.Fatalf("remaining = %d, %v; want 70", rem, err)
				}
				// Seeding again changes nothing.
				if err := s.SeedAll(ctx); err != nil {
					t.Fatal(err)
				}
				if rem, _, _ := res.Remaining(ctx, "sd"); rem != 70 {
					t.Fatalf("remaining after reseed = %d, want 70", rem)
				}
				if r, err := s.Reserve(ctx, "sd", testenv.Address(t, "p7@example.com")); err != nil || r.Outcome != invite.Existing {
					t.Fatalf("persisted email on its code: %v, %v; want Existing", r.Outcome, err)
				}
				if _, err := s.Reserve(ctx, "other", testenv.Address(t, "p7@example.com")); !errors.Is(err, invite.ErrEmailTaken) {
					t.Fatalf("persisted email on another code: %v; want ErrEmailTaken", err)
				}
			})
		}
	}
}

// TestUnknownCodeCache: unknown codes are answered from a snapshot of
// MongoDB's codes, so a flood of random codes costs one query per TTL, and
// a code created after a miss works once the snapshot expires.
func TestUnknownCodeCache(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	src := newSource()
	s := workflow.NewSignups(reserve.New(client(t, 2), reserve.Config{Namespace: "u"}), src,
		workflow.SignupsConfig{UnknownTTL: 2 * time.Second, Now: func() time.Time { return now }})
	if err := s.SeedIfNeeded(ctx); err != nil {
		t.Fatal(err)
	}
	src.lookups.Store(0)
	for i := 0; i < 50; i++ {
		if _, err := s.Reserve(ctx, fmt.Sprintf("random%d", i), testenv.Address(t, "a@example.com")); !errors.Is(err, invite.ErrUnknownCode) {
			t.Fatalf("err = %v, want ErrUnknownCode", err)
		}
		if _, err := s.Reserve(ctx, "later", testenv.Address(t, "a@example.com")); !errors.Is(err, invite.ErrUnknownCode) {
			t.Fatalf("err = %v, want ErrUnknownCode", err)
		}
	}
	if n := src.lookups.Load(); n != 1 {
		t.Fatalf("%d source lookups for 100 requests on 51 unknown codes, want 1", n)
	}
	src.add(invite.Invitation{Code: "later", MaxUses: 1})
	now = now.Add(3 * time.Second)
	if r, err := s.Reserve(ctx, "later", testenv.Address(t, "a@example.com")); err != nil || r.Outcome != invite.Created {
		t.Fatalf("after TTL: %v, %v; want Created", r.Outcome, err)
	}
}

// TestReseedAfterWipe is I5 on the Redis path: a wiped Redis is rebuilt
// from MongoDB on the next request, with no taken seat reopened.
func TestReseedAfterWipe(t *testing.T) {
	for i, rc := range redisClients[:2] {
		t.Run(rc.name, func(t *testing.T) {
			ctx := context.Background()
			src := newSource(invite.Invitation{Code: "w", MaxUses: 3})
			c := client(t, i)
			ns := testenv.KeyPrefix(t)
			s := workflow.NewSignups(reserve.New(c, reserve.Config{Namespace: ns, Shards: 4}), src, workflow.SignupsConfig{})
			for _, em := range []string{"a@example.com", "b@example.com"} {
				if _, err := s.Reserve(ctx, "w", testenv.Address(t, em)); err != nil {
					t.Fatal(err)
				}
				src.register(testenv.Address(t, em).Canonical, "w") // the reconciler's job, done by hand
			}
			testenv.Wipe(t, c, ns)
			// A new email gets the last seat; the next is refused; the old
			// ones are recognized.
			if r, err := s.Reserve(ctx, "w", testenv.Address(t, "c@example.com")); err != nil || r.Outcome != invite.Created {
				t.Fatalf("c: %v, %v", r.Outcome, err)
			}
			if _, err := s.Reserve(ctx, "w", testenv.Address(t, "d@example.com")); !errors.Is(err, invite.ErrFull) {
				t.Fatalf("d: %v, want ErrFull", err)
			}
			if r, err := s.Reserve(ctx, "w", testenv.Address(t, "a@example.com")); err != nil || r.Outcome != invite.Existing {
				t.Fatalf("a: %v, %v; want Existing", r.Outcome, err)
			}
		})
	}
}
