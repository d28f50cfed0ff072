package reserve

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/scripts/lua"
)

// failOpenAfter is a Client whose rebuild.lua "open" calls fail for every
// bucket but allow: a reseed whose process dies (or whose Redis call
// fails) after opening the first shard.
type failOpenAfter struct {
	Client
	allow string
}

var errInjected = errors.New("injected: process died between two opens")

func (c failOpenAfter) blocked(sha string, keys []string, args []any) bool {
	return sha == rebuildScript.Hash() && len(args) > 1 && fmt.Sprint(args[1]) == "open" && keys[0] != c.allow
}

func (c failOpenAfter) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if c.blocked(sha, keys, args) {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errInjected)
		return cmd
	}
	return c.Client.EvalSha(ctx, sha, keys, args...)
}

func (c failOpenAfter) Eval(ctx context.Context, src string, keys []string, args ...any) *redis.Cmd {
	if src == lua.Rebuild && c.blocked(rebuildScript.Hash(), keys, args) {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errInjected)
		return cmd
	}
	return c.Client.Eval(ctx, src, keys, args...)
}

// emailsOn returns n emails of prefix whose canonical form is on shard s of k.
func emailsOn(t *testing.T, prefix string, s, k, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		e := fmt.Sprintf("%s%d@example.com", prefix, i)
		if shardOf(testenv.Address(t, e).Canonical, k) == s {
			out = append(out, e)
		}
	}
	return out
}

// TestHoldsPartialRebuildGivesNothingBack: holds past their deadline but
// not yet expired when a reseed counts holds are not counted, and their
// seats are handed out again by the rebuild. A rebuild that stops after
// opening shard 0 leaves shards 1..3 zeroed, already in the new epoch, so
// those holds' expiry gives nothing back there: never more than max_uses
// (seats stay unused until the next reseed).
func TestHoldsPartialRebuildGivesNothingBack(t *testing.T) {
	ctx := context.Background()
	const code, max = "pr", 4
	r, raw := holdsOn(t, false, code, max, 100*time.Millisecond)
	// max holds, all on shard 1.
	holders := emailsOn(t, "ph", 1, 4, max)
	held, _ := holdOutcomes(t, r, code, holders)
	if len(held) != max {
		t.Fatalf("%d held, want %d", len(held), max)
	}
	time.Sleep(250 * time.Millisecond) // every hold past its deadline; no sweep ran

	owner, err := r.Freeze(ctx, code, 700*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// The reseed's process: it opens shard 0, then dies.
	dying := New(failOpenAfter{Client: raw, allow: r.keys.bucket(0, code)}, Config{Namespace: r.cfg.Namespace, Shards: 4})
	inv := invite.Invitation{Code: code, MaxUses: max, ConfirmWindow: 100 * time.Millisecond}
	if err := dying.Rebuild(ctx, inv, 0, owner); !errors.Is(err, errInjected) {
		t.Fatalf("rebuild: %v, want the injected failure", err)
	}
	time.Sleep(800 * time.Millisecond) // the freeze ends by itself
	expired, err := r.ExpireDue(ctx, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < 4; s++ {
		v, _ := raw.HMGet(ctx, r.keys.bucket(s, code), "tok", "ep").Result()
		t.Logf("shard %d: tok=%v ep=%v", s, v[0], v[1])
	}
	newHolds, _ := holdOutcomes(t, r, code, testenv.Emails("pn", 12))
	t.Logf("expired %d old holds; new holds after the failed reseed: %d (max %d)", expired, len(newHolds), max)
	if len(newHolds) > max {
		t.Errorf("I1: %d live holds at once on a code of max %d", len(newHolds), max)
	}
}

// TestHoldsConfirmWaitsForRecovery: on a shard whose Redis is not the
// recorded history (a promoted stale replica before the failover
// recovery), neither a token is handed out nor a hold confirmed (its
// expiry, and the seat taken again after it, may be lost): ErrHistory.
func TestHoldsConfirmWaitsForRecovery(t *testing.T) {
	ctx := context.Background()
	const code = "sh"
	r, raw := holdsOn(t, false, code, 4, time.Minute)
	a := testenv.Address(t, "stale@example.com")
	res, err := r.Reserve(ctx, code, a)
	if err != nil || res.Outcome != invite.Held {
		t.Fatalf("hold: %+v %v", res, err)
	}
	s := shardOf(a.Canonical, 4)
	// A failover to a replica: the recorded history is not Redis' current one.
	if err := raw.Set(ctx, r.keys.history(s), "0000000000000000000000000000000000000000", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reserve(ctx, code, testenv.Address(t, emailsOn(t, "st", s, 4, 1)[0])); err == nil {
		t.Fatal("a token was handed out on a stale history")
	} else {
		t.Logf("plain signup on the stale shard: %v", err)
	}
	claim, _ := raw.Get(ctx, r.keys.claim(s, a.Canonical)).Result()
	out, _, err := r.Confirm(ctx, code, a.Canonical, strings.Split(claim, "|")[3], a.Normalized)
	if !errors.Is(err, ErrHistory) {
		t.Errorf("confirm on a stale history: %d %v, want ErrHistory", out, err)
	}
}
