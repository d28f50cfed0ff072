// Command invitectl administers invitegate's invitations: create and
// import them, list their counters, change their capacity, state or
// confirmation window, reseed Redis from MongoDB, and report the
// further-instructions emails. It reads the same INVITEGATE_* environment
// as the service. It parses, calls internal/workflow, and prints; the
// workflows themselves live there.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/workflow"
)

const usage = `invitectl: administer invitegate invitations.

Usage:
  invitectl create CODE --max N [--expires RFC3339] [--disabled] [--confirm WINDOW]
  invitectl import [--skip-existing] FILE.csv
                                   rows: code,max_uses[,expires_at RFC 3339[,confirm_window]];
                                   empty fields: none; every row is checked before
                                   anything is written
  invitectl list [--json]
  invitectl set-max CODE N           up or down, applied to the live counters
                                   (INVITEGATE_RESERVER=mongo: up only)
  invitectl set-confirm CODE WINDOW|off
                                   signups on CODE hold their seat until the email
                                   is confirmed (off: register at once); holds already
                                   taken keep their deadlines
  invitectl disable CODE
  invitectl enable CODE
  invitectl reseed [CODE | --all]   no argument: restore what Redis lacks; CODE or
                                   --all: freeze, drain, rebuild from MongoDB
  invitectl mail [--json]           the further-instructions emails: pending, sent,
                                   failed (given up after INVITEGATE_MAIL_MAX_ATTEMPTS)
  invitectl mail retry              make every given-up email pending again

WINDOW is a confirmation window of 1s..7d: a Go duration (90s, 30m, 1h30m)
with an optional leading number of days (7d, 1d12h); off or 0 is none.

Connection settings come from the service's environment:
INVITEGATE_REDIS_ADDRS, INVITEGATE_REDIS_CLUSTER, INVITEGATE_REDIS_PASSWORD,
INVITEGATE_REDIS_NAMESPACE, INVITEGATE_MONGO_URI, INVITEGATE_MONGO_DB,
INVITEGATE_SHARDS; with INVITEGATE_RESERVER=mongo MongoDB alone (no reseed).

Exit codes: 0 success, 1 failure (unreachable store, ...), 2 bad usage or
bad input, 3 an invitation already exists (create, import), 4 no such
invitation, 5 refused: set-max below the seats already taken (nothing
changed).
`

// Exit codes a script can rely on.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitExists  = 3
	exitMissing = 4
	exitRefused = 5
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is a connected invitectl.
type env struct {
	cfg   config.Config
	store *persist.Store
	inv   *workflow.Invitations
	// res is the Redis reservation layer; nil with INVITEGATE_RESERVER=mongo,
	// where MongoDB alone holds the seats and no Redis is needed.
	res   *reserve.Reserver
	close func()
}

func connect(getenv func(string) string, stderr io.Writer) (*env, error) {
	cfg, err := config.Load("invitectl", nil, getenv, stderr)
	if err != nil {
		return nil, err
	}
	log := logrus.New()
	log.SetOutput(stderr)
	log.SetLevel(logrus.WarnLevel)
	if cfg.Reserver == config.ReserverMongo {
		return connectMongoOnly(cfg, log)
	}
	rdb := app.NewRedis(cfg, 4)
	mc, err := app.NewMongo(cfg)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	store := persist.NewStore(mc.Database(cfg.MongoDB), log, nil)
	res := reserve.New(rdb, reserve.Config{Namespace: cfg.RedisNamespace, Shards: cfg.Shards, Logger: log})
	// A wrong INVITEGATE_SHARDS here would write to the wrong shards:
	// refuse before touching anything.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = workflow.CheckShards(ctx, store, res, cfg.Shards)
	if err != nil {
		_ = rdb.Close()
		_ = mc.Disconnect(ctx)
		return nil, err
	}
	return &env{cfg: cfg, store: store, inv: workflow.NewInvitations(store, res, nil), res: res, close: func() {
		_ = rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = mc.Disconnect(ctx)
	}}, nil
}

// connectMongoOnly connects a deployment that runs INVITEGATE_RESERVER=mongo:
// MongoDB alone, after checking that the deployment does run that path.
func connectMongoOnly(cfg config.Config, log logrus.FieldLogger) (*env, error) {
	mc, err := app.NewMongo(cfg)
	if err != nil {
		return nil, err
	}
	store := persist.NewStore(mc.Database(cfg.MongoDB), log, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Only read: recording the path is the service's first start, which
	// also seats the registrations made before.
	if err := store.ExpectReserver(ctx, cfg.Reserver); err != nil {
		_ = mc.Disconnect(ctx)
		return nil, err
	}
	return &env{cfg: cfg, store: store, inv: workflow.NewInvitations(store, nil, nil), close: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = mc.Disconnect(ctx)
	}}, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "create", "list", "reseed", "import", "set-max", "set-confirm", "disable", "enable", "mail":
	default:
		fmt.Fprintf(stderr, "invitectl: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	fs := flag.NewFlagSet("invitectl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	maxUses := fs.Int("max", 0, "capacity of the invitation, 1..1000")
	expires := fs.String("expires", "", "expiry time, RFC 3339 (e.g. 2027-01-31T23:59:59Z)")
	disabled := fs.Bool("disabled", false, "create the invitation disabled")
	confirm := fs.String("confirm", "", "confirmation window, 1s..7d (e.g. 30m, 1d12h): signups hold their seat until the email is confirmed")
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "reseed: rebuild every invitation")
	skipExisting := fs.Bool("skip-existing", false, "import: leave codes that already exist alone instead of failing")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}

	var inv invite.Invitation
	switch cmd {
	case "create":
		if len(pos) != 1 {
			fmt.Fprintln(stderr, "invitectl create: want exactly one CODE")
			return exitUsage
		}
		inv = invite.Invitation{Code: pos[0], MaxUses: *maxUses, Disabled: *disabled}
		if !invite.ValidCode(inv.Code) {
			fmt.Fprintln(stderr, "invitectl create: CODE must be 1-64 characters of A-Z a-z 0-9 _ -")
			return exitUsage
		}
		if !invite.ValidMaxUses(inv.MaxUses) {
			fmt.Fprintf(stderr, "invitectl create: --max must be 1..%d\n", invite.MaxUsesLimit)
			return exitUsage
		}
		if *expires != "" {
			t, err := time.Parse(time.RFC3339, *expires)
			if err != nil {
				fmt.Fprintf(stderr, "invitectl create: --expires %q: want RFC 3339 such as 2027-01-31T23:59:59Z\n", *expires)
				return exitUsage
			}
			inv.ExpiresAt = t.UTC()
		}
		if *confirm != "" {
			if inv.ConfirmWindow, err = parseWindow(*confirm); err != nil {
				fmt.Fprintf(stderr, "invitectl create: --confirm %v\n", err)
				return exitUsage
			}
		}
	case "set-confirm":
		if len(pos) != 2 {
			fmt.Fprintln(stderr, "invitectl set-confirm: want CODE WINDOW (e.g. 30m, 7d) or CODE off")
			return exitUsage
		}
		if inv.ConfirmWindow, err = parseWindow(pos[1]); err != nil {
			fmt.Fprintf(stderr, "invitectl set-confirm: %v\n", err)
			return exitUsage
		}
		inv.Code = pos[0]
	case "set-max":
		// NOTE: with INVITEGATE_RESERVER=mongo only raising max_uses is
		// supported (setMax): lowering it safely needs the seats above the
		// new max moved below it, which is not built yet.
		if len(pos) != 2 {
			fmt.Fprintln(stderr, "invitectl set-max: want CODE N")
			return exitUsage
		}
		n, err := strconv.Atoi(pos[1])
		if err != nil || !invite.ValidMaxUses(n) {
			fmt.Fprintf(stderr, "invitectl set-max: N must be 1..%d\n", invite.MaxUsesLimit)
			return exitUsage
		}
		inv = invite.Invitation{Code: pos[0], MaxUses: n}
	case "reseed":
		if len(pos) > 1 || (len(pos) == 1 && *all) {
			fmt.Fprintln(stderr, "invitectl reseed: want nothing, one CODE, or --all")
			return exitUsage
		}
		if len(pos) == 1 {
			inv.Code = pos[0]
		}
	case "mail":
		if len(pos) > 1 || (len(pos) == 1 && pos[0] != "retry") {
			fmt.Fprintln(stderr, "invitectl mail: want nothing or retry")
			return exitUsage
		}
		if len(pos) == 1 {
			inv.Code = pos[0]
		}
	case "disable", "enable", "import":
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "invitectl %s: want exactly one argument\n", cmd)
			return exitUsage
		}
		inv.Code = pos[0]
	default:
		if len(pos) != 0 {
			fmt.Fprintf(stderr, "invitectl %s: unexpected arguments: %s\n", cmd, strings.Join(pos, " "))
			return exitUsage
		}
	}
	var batch []invite.Invitation
	if cmd == "import" {
		if batch, err = readCSV(inv.Code); err != nil {
			fmt.Fprintf(stderr, "invitectl import: %v\n", err)
			return exitUsage
		}
	}

	e, err := connect(getenv, stderr)
	if errors.Is(err, persist.ErrDatabase) || errors.Is(err, invite.ErrUnavailable) {
		fmt.Fprintf(stderr, "invitectl: %v\n", err)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "invitectl: configuration: %v\n", err)
		return exitUsage
	}
	defer e.close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()

	switch cmd {
	case "create":
		return create(ctx, e, inv, stdout, stderr)
	case "list":
		return list(ctx, e, *asJSON, stdout, stderr)
	case "import":
		return importAll(ctx, e, batch, *skipExisting, stdout, stderr)
	case "set-max":
		return setMax(ctx, e, inv.Code, inv.MaxUses, stdout, stderr)
	case "set-confirm":
		return setConfirm(ctx, e, inv.Code, inv.ConfirmWindow, stdout, stderr)
	case "disable", "enable":
		return setDisabled(ctx, e, inv.Code, cmd == "disable", stdout, stderr)
	case "mail":
		return mailStatus(ctx, e, inv.Code == "retry", *asJSON, stdout, stderr)
	default:
		return reseed(ctx, e, inv.Code, *all, stdout, stderr)
	}
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("create CODE --max 5" and "create --max 5 CODE").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func create(ctx context.Context, e *env, inv invite.Invitation, stdout, stderr io.Writer) int {
	err := e.inv.Create(ctx, inv)
	switch {
	case errors.Is(err, persist.ErrExists):
		fmt.Fprintf(stderr, "invitectl create: invitation %q already exists\n", inv.Code)
		return exitExists
	case errors.Is(err, workflow.ErrNotSeeded):
		// Created; a replica seeds the code on its first request.
		fmt.Fprintf(stderr, "invitectl create: created in MongoDB, but %v\n", err)
	case err != nil:
		fmt.Fprintf(stderr, "invitectl create: %v\n", err)
		return exitFailure
	}
	if inv.ConfirmWindow > 0 {
		fmt.Fprintf(stdout, "created %s (max %d, confirm %s)\n", inv.Code, inv.MaxUses, formatWindow(inv.ConfirmWindow))
	} else {
		fmt.Fprintf(stdout, "created %s (max %d)\n", inv.Code, inv.MaxUses)
	}
	return exitOK
}

func list(ctx context.Context, e *env, asJSON bool, stdout, stderr io.Writer) int {
	rows, err := e.inv.List(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "invitectl list: %v\n", err)
		return exitFailure
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return exitFailure
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CODE\tMAX\tCONFIRM\tPERSISTED\tHELD\tCONFIRMED\tRESERVED\tREMAINING\tSTATE\tLAG\t")
	for _, r := range rows {
		state := "open"
		switch {
		case r.Disabled:
			state = "disabled"
		case r.Expired:
			state = "expired"
		case !r.Seeded:
			state = "unseeded"
		}
		lag := "-"
		if r.LagSeconds > 0 {
			lag = (time.Duration(r.LagSeconds * float64(time.Second))).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", r.Code, r.MaxUses, formatWindow(time.Duration(r.ConfirmWindowMs)*time.Millisecond),
			r.Persisted, r.Held, r.Confirmed, r.Reserved, r.Remaining, state, lag)
	}
	_ = tw.Flush()
	return exitOK
}
