package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// readCSV parses an import file: code,max_uses[,expires_at] per line, an
// optional header line starting with "code". Every problem is reported
// with its line number; nothing is returned unless every row is good.
func readCSV(path string) ([]invite.Invitation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.Comment = '#'
	var out []invite.Invitation
	seen := map[string]int{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if len(out) == 0 && len(seen) == 0 && strings.EqualFold(strings.TrimSpace(rec[0]), "code") {
			seen[""] = line // header
			continue
		}
		if len(rec) < 2 || len(rec) > 3 {
			return nil, fmt.Errorf("line %d: want code,max_uses[,expires_at], got %d fields", line, len(rec))
		}
		inv := invite.Invitation{Code: strings.TrimSpace(rec[0])}
		if !invite.ValidCode(inv.Code) {
			return nil, fmt.Errorf("line %d: code %q must be 1-64 characters of A-Z a-z 0-9 _ -", line, inv.Code)
		}
		if prev, ok := seen[inv.Code]; ok {
			return nil, fmt.Errorf("line %d: code %q already on line %d", line, inv.Code, prev)
		}
		seen[inv.Code] = line
		n, err := strconv.Atoi(strings.TrimSpace(rec[1]))
		if err != nil || !invite.ValidMaxUses(n) {
			return nil, fmt.Errorf("line %d: max_uses %q must be an integer 1..%d", line, rec[1], invite.MaxUsesLimit)
		}
		inv.MaxUses = n
		if len(rec) == 3 && strings.TrimSpace(rec[2]) != "" {
			t, err := time.Parse(time.RFC3339, strings.TrimSpace(rec[2]))
			if err != nil {
				return nil, fmt.Errorf("line %d: expires_at %q is not RFC 3339 (e.g. 2027-01-31T23:59:59Z)", line, rec[2])
			}
			inv.ExpiresAt = t.UTC()
		}
		out = append(out, inv)
	}
	if len(out) == 0 {
		return nil, errors.New("no invitations in the file")
	}
	return out, nil
}

func importAll(ctx context.Context, e *env, invs []invite.Invitation, skipExisting bool, stdout, stderr io.Writer) int {
	skipped := 0
	if skipExisting {
		kept := invs[:0:0]
		for _, inv := range invs {
			_, ok, err := e.store.Invitation(ctx, inv.Code)
			if err != nil {
				fmt.Fprintf(stderr, "invitectl import: nothing imported: %v\n", err)
				return exitFailure
			}
			if ok {
				skipped++
				continue
			}
			kept = append(kept, inv)
		}
		invs = kept
	}
	if err := e.store.CreateInvitations(ctx, invs); err != nil {
		if errors.Is(err, persist.ErrPartial) {
			fmt.Fprintf(stderr, "invitectl import: stopped part-way (%v); run it again with --skip-existing to finish\n", err)
		} else {
			fmt.Fprintf(stderr, "invitectl import: nothing imported: %v\n", err)
		}
		if errors.Is(err, persist.ErrExists) {
			return exitExists
		}
		return exitFailure
	}
	for _, inv := range invs {
		if e.res == nil {
			break // MongoDB alone: nothing to seed
		}
		if err := e.res.SeedCode(ctx, inv); err != nil {
			fmt.Fprintf(stderr, "invitectl import: %s: seeding Redis failed (the service seeds it on first use): %v\n", inv.Code, err)
		}
	}
	fmt.Fprintf(stdout, "imported %d invitations", len(invs))
	if skipped > 0 {
		fmt.Fprintf(stdout, ", skipped %d that exist", skipped)
	}
	fmt.Fprintln(stdout)
	return exitOK
}

// setMax changes a code's capacity in MongoDB and in the live Redis
// buckets. Up: MongoDB first, then the new seats. Down: the seats are
// taken out of Redis first (refused, changing nothing, when fewer are
// free), then MongoDB; if MongoDB fails they go back.
func setMax(ctx context.Context, e *env, code string, n int, stdout, stderr io.Writer) int {
	if e.res == nil {
		return setMaxMongoOnly(ctx, e, code, n, stdout, stderr)
	}
	// Under the code's lock no seeder creates buckets from the old capacity
	// and no reseed rebuilds them meanwhile.
	unlock, err := e.res.Lock(ctx, code, 30*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
		return exitFailure
	}
	defer unlock()
	inv, ok, err := e.store.Invitation(ctx, code)
	if err != nil {
		fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
		return exitFailure
	}
	if !ok {
		fmt.Fprintf(stderr, "invitectl set-max: no invitation %q\n", code)
		return exitMissing
	}
	old := inv.MaxUses
	switch {
	case n == old:
		fmt.Fprintf(stdout, "%s already has max %d\n", code, n)
		return exitOK
	case n > old:
		if err := e.store.SetMaxUses(ctx, code, old, n); err != nil {
			fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
			return exitFailure
		}
		if err := e.res.Grow(ctx, code, n-old, n); err != nil {
			fmt.Fprintf(stderr, "invitectl set-max: MongoDB has max %d, but Redis was not updated (run `invitectl reseed`): %v\n", n, err)
			return exitFailure
		}
	default:
		persisted, err := e.store.Count(ctx, code)
		if err != nil {
			fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
			return exitFailure
		}
		if n < persisted {
			fmt.Fprintf(stderr, "invitectl set-max: refused: %s already has %d registrations, more than %d; nothing changed\n", code, persisted, n)
			return exitRefused
		}
		if _, err := e.res.Shrink(ctx, code, old-n, old, n); err != nil {
			if errors.Is(err, reserve.ErrBelowTaken) {
				fmt.Fprintf(stderr, "invitectl set-max: refused: fewer than %d of %s's seats are free; nothing changed\n", old-n, code)
				return exitRefused
			}
			fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
			return exitFailure
		}
		if err := e.store.SetMaxUses(ctx, code, old, n); err != nil {
			// The update may have landed although it reported an error
			// (a timeout): put the seats back only if MongoDB still says old.
			if now, ok, rerr := e.store.Invitation(ctx, code); rerr == nil && ok && now.MaxUses == old {
				if gerr := e.res.Grow(ctx, code, old-n, old); gerr != nil {
					fmt.Fprintf(stderr, "invitectl set-max: putting seats back failed (run `invitectl reseed %s`): %v\n", code, gerr)
				}
			} else {
				fmt.Fprintf(stderr, "invitectl set-max: MongoDB's max_uses is uncertain; check with `invitectl list` and run `invitectl reseed %s`\n", code)
			}
			fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
			return exitFailure
		}
	}
	fmt.Fprintf(stdout, "%s: max %d -> %d\n", code, old, n)
	return exitOK
}

// setMaxMongoOnly raises a code's max_uses with INVITEGATE_RESERVER=mongo,
// where a seat is a document <code>#k for k below max_uses: more seats are
// simply more k. Lowering is refused: seats at or above the new max may be
// taken while free ones below it remain, so the count could pass the new
// max.
func setMaxMongoOnly(ctx context.Context, e *env, code string, n int, stdout, stderr io.Writer) int {
	inv, ok, err := e.store.Invitation(ctx, code)
	if err != nil {
		fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
		return exitFailure
	}
	if !ok {
		fmt.Fprintf(stderr, "invitectl set-max: no invitation %q\n", code)
		return exitMissing
	}
	switch {
	case n == inv.MaxUses:
		fmt.Fprintf(stdout, "%s already has max %d\n", code, n)
		return exitOK
	case n < inv.MaxUses:
		fmt.Fprintf(stderr, "invitectl set-max: refused: with INVITEGATE_RESERVER=mongo max_uses can only be raised; nothing changed\n")
		return exitRefused
	}
	if err := e.store.SetMaxUses(ctx, code, inv.MaxUses, n); err != nil {
		fmt.Fprintf(stderr, "invitectl set-max: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: max %d -> %d\n", code, inv.MaxUses, n)
	return exitOK
}

func setDisabled(ctx context.Context, e *env, code string, disabled bool, stdout, stderr io.Writer) int {
	verb := map[bool]string{true: "disable", false: "enable"}[disabled]
	if e.res != nil {
		unlock, err := e.res.Lock(ctx, code, 30*time.Second)
		if err != nil {
			fmt.Fprintf(stderr, "invitectl %s: %v\n", verb, err)
			return exitFailure
		}
		defer unlock()
	}
	if err := e.store.SetDisabled(ctx, code, disabled); err != nil {
		if errors.Is(err, persist.ErrNotFound) {
			fmt.Fprintf(stderr, "invitectl %s: no invitation %q\n", verb, code)
			return exitMissing
		}
		fmt.Fprintf(stderr, "invitectl %s: %v\n", verb, err)
		return exitFailure
	}
	// With MongoDB alone (e.res nil) every signup reads the invitation.
	if e.res != nil {
		if err := e.res.SetDisabled(ctx, code, disabled); err != nil {
			fmt.Fprintf(stderr, "invitectl %s: MongoDB updated, Redis not (run `invitectl reseed`): %v\n", verb, err)
			return exitFailure
		}
	}
	fmt.Fprintf(stdout, "%sd %s\n", verb, code)
	return exitOK
}

// mailStatus prints how many further-instructions emails are pending,
// sent and given up; with retry it first reopens the given-up ones.
func mailStatus(ctx context.Context, e *env, retry, asJSON bool, stdout, stderr io.Writer) int {
	if retry {
		n, err := e.store.RetryFailedMail(ctx, time.Now())
		if err != nil {
			fmt.Fprintf(stderr, "invitectl mail retry: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "reopened %d given-up emails\n", n)
		return exitOK
	}
	counts, err := e.store.MailCounts(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "invitectl mail: %v\n", err)
		return exitFailure
	}
	if asJSON {
		b, _ := json.Marshal(counts)
		fmt.Fprintln(stdout, string(b))
		return exitOK
	}
	for _, st := range []string{persist.MailPending, persist.MailSent, persist.MailFailed} {
		fmt.Fprintf(stdout, "%-8s %d\n", st, counts[st])
	}
	return exitOK
}
