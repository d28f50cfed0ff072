package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/invitegate/invitegate/internal/persist"
)

// freezeFor bounds how long a reseed may keep a code closed; if invitectl
// dies mid-way the code reopens by itself (with its old state, or some
// seats unused if the rebuild had begun).
const freezeFor = 30 * time.Second

// reseed restores Redis from MongoDB. Without a code it fills in what
// Redis lacks (claims, buckets, sentinels) and touches nothing it holds.
// With a code, or --all, it rebuilds each code exactly under live traffic:
// freeze, write its pending reservations to MongoDB, restore its claims,
// rebuild its buckets from MongoDB's count, reopen.
func reseed(ctx context.Context, e *env, code string, all bool, stdout, stderr io.Writer) int {
	if code == "" {
		if err := e.res.SeedAll(ctx); err != nil {
			fmt.Fprintf(stderr, "invitectl reseed: %v\n", err)
			return exitFailure
		}
		if !all {
			fmt.Fprintln(stdout, "reseeded: every missing claim and bucket restored from MongoDB")
			return exitOK
		}
		invs, err := e.store.Invitations(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "invitectl reseed: %v\n", err)
			return exitFailure
		}
		for _, inv := range invs {
			if rc := reseedCode(ctx, e, inv.Code, stdout, stderr); rc != exitOK {
				return rc
			}
		}
		return exitOK
	}
	return reseedCode(ctx, e, code, stdout, stderr)
}

func reseedCode(ctx context.Context, e *env, code string, stdout, stderr io.Writer) int {
	fail := func(step string, err error) int {
		fmt.Fprintf(stderr, "invitectl reseed %s: %s: %v (the code reopens within %s; run the reseed again)\n", code, step, err, freezeFor)
		return exitFailure
	}
	if _, ok, err := e.store.Invitation(ctx, code); err != nil {
		return fail("read invitation", err)
	} else if !ok {
		fmt.Fprintf(stderr, "invitectl reseed: no invitation %q\n", code)
		return exitMissing
	}
	start := time.Now()
	// The code's lock keeps seeders and other invitectl changes out; the
	// freeze keeps signups out.
	unlock, err := e.res.Lock(ctx, code, freezeFor)
	if err != nil {
		return fail("lock", err)
	}
	defer unlock()
	owner, err := e.res.Freeze(ctx, code, freezeFor)
	if err != nil {
		return fail("freeze", err)
	}
	// Read after freezing: what the rebuild uses is what MongoDB says now.
	inv, ok, err := e.store.Invitation(ctx, code)
	if err != nil || !ok {
		return fail("read invitation", fmt.Errorf("gone or unreadable: %v", err))
	}
	pending, err := e.res.Pending(ctx, code)
	if err != nil {
		return fail("read pending reservations", err)
	}
	results, err := e.store.Persist(ctx, pending)
	if err != nil {
		return fail("write pending reservations", err)
	}
	for i, r := range results {
		switch r.Outcome {
		case persist.Written, persist.AlreadyWritten:
		case persist.Conflict:
			// Marks the entry as given back, so the reconciler's later
			// pass cannot add a token to the rebuilt bucket.
			if _, err := e.res.GiveBack(ctx, pending[i], r.Owner); err != nil {
				return fail("undo a refused reservation", err)
			}
		default:
			return fail("write pending reservations", fmt.Errorf("MongoDB did not take %d of them", len(pending)-i))
		}
	}
	persisted, err := e.res.RestoreClaims(ctx, code)
	if err != nil {
		return fail("restore claims", err)
	}
	if err := e.res.Rebuild(ctx, inv, persisted, owner); err != nil {
		return fail("rebuild buckets", err)
	}
	fmt.Fprintf(stdout, "reseeded %s: max %d, registered %d, remaining %d (frozen %s, %d pending written)\n",
		code, inv.MaxUses, persisted, max(inv.MaxUses-persisted, 0), time.Since(start).Round(time.Millisecond), len(pending))
	return exitOK
}
