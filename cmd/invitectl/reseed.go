package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/workflow"
)

// reseed restores Redis from MongoDB. Without a code it fills in what
// Redis lacks and touches nothing it holds; with a code, or --all, it
// rebuilds each code exactly under live traffic.
func reseed(ctx context.Context, e *env, code string, all bool, stdout, stderr io.Writer) int {
	printReport := func(r workflow.ReseedReport) {
		fmt.Fprintf(stdout, "reseeded %s: max %d, registered %d, remaining %d (frozen %s, %d pending written)\n",
			r.Code, r.MaxUses, r.Registered, r.Remaining(), r.Frozen.Round(time.Millisecond), r.Pending)
	}
	var err error
	switch {
	case code != "":
		var rep workflow.ReseedReport
		if rep, err = e.inv.Reseed(ctx, code); err == nil {
			printReport(rep)
		}
	case all:
		if err = e.inv.RestoreMissing(ctx); err == nil {
			err = e.inv.ReseedAll(ctx, printReport)
		}
	default:
		if err = e.inv.RestoreMissing(ctx); err == nil {
			fmt.Fprintln(stdout, "reseeded: every missing claim and bucket restored from MongoDB")
		}
	}
	if errors.Is(err, workflow.ErrNoRedis) {
		fmt.Fprintln(stderr, "invitectl reseed: rebuilds Redis from MongoDB; this deployment runs without Redis (INVITEGATE_RESERVER=mongo), where MongoDB's seats are the only counters")
		return exitUsage
	}
	if all && err != nil {
		fmt.Fprintf(stderr, "invitectl reseed %v\n", err)
		return exitCode(err)
	}
	if err != nil && code != "" && !errors.Is(err, persist.ErrNotFound) {
		fmt.Fprintf(stderr, "invitectl reseed %s: %v\n", code, err)
		return exitCode(err)
	}
	if err != nil {
		return fail(stderr, "reseed", code, err)
	}
	return exitOK
}
