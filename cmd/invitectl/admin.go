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
	"github.com/invitegate/invitegate/internal/workflow"
)

// readCSV parses an import file: code,max_uses[,expires_at[,confirm_window]]
// per line (an empty field: none; confirm_window as parseWindow reads it),
// an optional header line starting with "code". Every problem is reported
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
		if len(rec) < 2 || len(rec) > 4 {
			return nil, fmt.Errorf("line %d: want code,max_uses[,expires_at[,confirm_window]], got %d fields", line, len(rec))
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
		if len(rec) >= 3 && strings.TrimSpace(rec[2]) != "" {
			t, err := time.Parse(time.RFC3339, strings.TrimSpace(rec[2]))
			if err != nil {
				return nil, fmt.Errorf("line %d: expires_at %q is not RFC 3339 (e.g. 2027-01-31T23:59:59Z)", line, rec[2])
			}
			inv.ExpiresAt = t.UTC()
		}
		if len(rec) == 4 && strings.TrimSpace(rec[3]) != "" {
			if inv.ConfirmWindow, err = parseWindow(rec[3]); err != nil {
				return nil, fmt.Errorf("line %d: confirm_window %w", line, err)
			}
		}
		out = append(out, inv)
	}
	if len(out) == 0 {
		return nil, errors.New("no invitations in the file")
	}
	return out, nil
}

func importAll(ctx context.Context, e *env, invs []invite.Invitation, skipExisting bool, stdout, stderr io.Writer) int {
	rep, err := e.inv.Import(ctx, invs, skipExisting)
	if err != nil {
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
	for _, err := range rep.NotSeeded {
		fmt.Fprintf(stderr, "invitectl import: %v\n", err)
	}
	fmt.Fprintf(stdout, "imported %d invitations", rep.Imported)
	if rep.Skipped > 0 {
		fmt.Fprintf(stdout, ", skipped %d that exist", rep.Skipped)
	}
	fmt.Fprintln(stdout)
	return exitOK
}

// setMax changes a code's capacity in MongoDB and in the live counters.
func setMax(ctx context.Context, e *env, code string, n int, stdout, stderr io.Writer) int {
	old, err := e.inv.SetMax(ctx, code, n)
	if err != nil {
		return fail(stderr, "set-max", code, err)
	}
	if old == n {
		fmt.Fprintf(stdout, "%s already has max %d\n", code, n)
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: max %d -> %d\n", code, old, n)
	return exitOK
}

// setConfirm changes a code's confirmation window (0: none) in MongoDB and
// in the live counters.
func setConfirm(ctx context.Context, e *env, code string, d time.Duration, stdout, stderr io.Writer) int {
	old, err := e.inv.SetConfirmWindow(ctx, code, d)
	if err != nil {
		return fail(stderr, "set-confirm", code, err)
	}
	if old == d {
		fmt.Fprintf(stdout, "%s already has confirm %s\n", code, formatWindow(d))
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: confirm %s -> %s\n", code, formatWindow(old), formatWindow(d))
	return exitOK
}

func setDisabled(ctx context.Context, e *env, code string, disabled bool, stdout, stderr io.Writer) int {
	verb := map[bool]string{true: "disable", false: "enable"}[disabled]
	if err := e.inv.SetDisabled(ctx, code, disabled); err != nil {
		return fail(stderr, verb, code, err)
	}
	fmt.Fprintf(stdout, "%sd %s\n", verb, code)
	return exitOK
}

// fail reports a failed command on code and returns its exit code.
func fail(stderr io.Writer, cmd, code string, err error) int {
	if errors.Is(err, persist.ErrNotFound) {
		fmt.Fprintf(stderr, "invitectl %s: no invitation %q\n", cmd, code)
	} else {
		fmt.Fprintf(stderr, "invitectl %s: %v\n", cmd, err)
	}
	return exitCode(err)
}

// exitCode is the exit code of a failed command.
func exitCode(err error) int {
	switch {
	case errors.Is(err, persist.ErrNotFound):
		return exitMissing
	case errors.Is(err, workflow.ErrRefused):
		return exitRefused
	case errors.Is(err, persist.ErrExists):
		return exitExists
	case errors.Is(err, workflow.ErrNoRedis):
		return exitUsage
	}
	return exitFailure
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
