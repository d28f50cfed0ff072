package reserve

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/scripts/lua"
)

// The Lua scripts, each called only through its typed wrapper below (the
// contract of each is the header of its .lua file). They run by SHA with
// an EVAL fallback, so a restarted Redis or a new release needs no loading
// step. Every wrapper returns Redis' errors wrapped in invite.ErrUnavailable
// and a reply it cannot decode as a plain error.
var (
	reserveScript  = script(lua.Reserve)
	stealScript    = script(lua.Steal)
	seedScript     = script(lua.Seed)
	giveBackScript = script(lua.GiveBack)
	adjustScript   = script(lua.Adjust)
	unlockScript   = script(lua.Unlock)
	freezeScript   = script(lua.Freeze)
	rebuildScript  = script(lua.Rebuild)
	historyScript  = script(lua.History)
	seatHintScript = script(lua.SeatHint)
	expireScript   = script(lua.Expire)
	confirmScript  = script(lua.Confirm)
	restampScript  = script(lua.Restamp)
	restoreScript  = script(lua.RestoreHold)
	dueHoldScript  = script(lua.DueHold)
)

// allScripts is every script made by script, for LoadScripts.
var allScripts []*redis.Script

func script(src string) *redis.Script {
	s := redis.NewScript(src)
	allScripts = append(allScripts, s)
	return s
}

// reserveStatus is the first element of reserve.lua's reply.
type reserveStatus int

// reserve.lua's statuses, in its numbering.
const (
	stReserved reserveStatus = 1 + iota // arg: the stream entry's ID
	stExisting                          // the email holds this code
	stTaken                             // arg: the code the email holds
	stSoldOut                           // no token here, the code is marked sold out
	stEmpty                             // no token here: move tokens here (sweep)
	stClosed                            // arg: "disabled" or "expired"
	stNoBucket                          // no bucket for the code on this shard
	stNoSeed                            // shard not seeded
	stMismatch                          // arg: the shard count the shard was seeded for
	stFrozen                            // arg: ms the reseed's freeze still holds
	stHistory                           // another Redis history: recover first
	stHeld                              // args: the hold's ID, its deadline (unix ms)
	stHoldDue                           // arg: the code of the email's hold past its deadline: expire it first
)

// reply is reserve.lua's reply.
type reply struct {
	status reserveStatus
	arg    string
	arg2   string
	again  bool // stHeld: the email's live hold, answered again
}

// reserveCall is one run of reserve.lua: its keys, then its arguments.
type reserveCall struct {
	sentinel, bucket, claim, stream, history, holds string
	transfer                                        string // only with carried tokens

	code, canonical, email string
	now                    int64  // unix ms
	carry                  int    // tokens carried in from another shard
	carryEpoch             string // epoch of the bucket they came from
	markTTL                int64  // ms; 0: answer stEmpty instead of marking sold out
	shards                 string // the caller's K
	sweepLease             int64  // ms; 0: none
	ack                    bool   // the caller WAITs: a repeat rewrites its claim
}

// keysArgs are reserve.lua's KEYS and ARGV for in.
func (in reserveCall) keysArgs() ([]string, []any) {
	keys := []string{in.sentinel, in.bucket, in.claim, in.stream, in.history, in.holds}
	if in.transfer != "" {
		keys = append(keys, in.transfer)
	}
	ack := "0"
	if in.ack {
		ack = "1"
	}
	return keys, []any{in.code, in.canonical, in.email, in.now, in.carry, in.markTTL, in.shards, in.carryEpoch, in.sweepLease, ack}
}

// evalReserve runs reserve.lua, through p when p is not nil. A pipelined
// call waits for its batch until ctx ends, but the batch runs on the
// pipeliner's context, so a caller that gave up may still have been
// admitted, as when a plain call times out after Redis ran it (the claim
// makes a retry answer "already registered"). A Redis lacking the script
// (a restart, a flush) is answered by a plain call, which loads it.
func evalReserve(ctx context.Context, c redis.Scripter, p Submitter, in reserveCall) (reply, error) {
	keys, args := in.keysArgs()
	var v []any
	var err error
	if p == nil {
		v, err = reserveScript.Run(ctx, c, keys, args...).Slice()
	} else {
		v, err = submitReserve(ctx, c, p, keys, args)
	}
	if err != nil {
		return reply{}, invite.Unavailable(err)
	}
	return decodeReply(v)
}

func submitReserve(ctx context.Context, c redis.Scripter, p Submitter, keys []string, args []any) ([]any, error) {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, "evalsha", reserveScript.Hash(), len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	cmdArgs = append(cmdArgs, args...)
	cmd := redis.NewCmd(ctx, cmdArgs...)
	err := p.Submit(ctx, cmd).WaitContext(ctx)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		return reserveScript.Run(ctx, c, keys, args...).Slice()
	}
	if err != nil {
		return nil, err
	}
	return cmd.Slice()
}

// evalReserveWait runs reserve.lua and WAIT replicas timeout on node in
// one round trip (evalWait).
func evalReserveWait(ctx context.Context, node *redis.Client, in reserveCall, replicas int, timeout time.Duration) (rep reply, acked int64, err error) {
	keys, args := in.keysArgs()
	v, acked, err := evalWait(ctx, node, reserveScript, keys, args, replicas, timeout)
	if err != nil {
		return reply{}, 0, invite.Unavailable(err)
	}
	rep, err = decodeReply(v)
	return rep, acked, err
}

// evalWait runs sc and WAIT replicas timeout on node as one pipeline: both
// go out on one connection, so WAIT counts the replicas holding everything
// that connection wrote, the script's writes included. acked is WAIT's
// answer. A node lacking the script gets it loaded and the pair sent
// again.
func evalWait(ctx context.Context, node *redis.Client, sc *redis.Script, keys []string, args []any, replicas int, timeout time.Duration) ([]any, int64, error) {
	send := func() (ev, w *redis.Cmd) {
		pipe := node.Pipeline()
		ev = pipe.EvalSha(ctx, sc.Hash(), keys, args...)
		// Pipeliner has no Wait method: WAIT blocks its connection, which
		// is the point here.
		w = pipe.Do(ctx, "wait", replicas, timeout.Milliseconds())
		_, _ = pipe.Exec(ctx) // each command carries its own error
		return ev, w
	}
	ev, w := send()
	if redis.HasErrorPrefix(ev.Err(), "NOSCRIPT") {
		if err := sc.Load(ctx, node).Err(); err != nil {
			return nil, 0, err
		}
		ev, w = send()
	}
	v, err := ev.Slice()
	if err != nil {
		return nil, 0, err
	}
	acked, err := w.Int64()
	if err != nil {
		return nil, 0, err
	}
	return v, acked, nil
}

// decodeReply turns reserve.lua's {status, arg?} array into a reply.
func decodeReply(v []any) (reply, error) {
	st, arg, err := decodePair(v)
	rep := reply{status: reserveStatus(st), arg: arg}
	if err == nil && len(v) > 2 {
		switch a := v[2].(type) {
		case string:
			rep.arg2 = a
		case int64:
			rep.arg2 = strconv.FormatInt(a, 10)
		}
	}
	rep.again = len(v) > 3
	return rep, err
}

// decodePair decodes a script's {integer, arg?} array.
func decodePair(v []any) (int64, string, error) {
	if len(v) == 0 {
		return 0, "", errors.New("reserve: empty script reply")
	}
	n, ok := v[0].(int64)
	if !ok {
		return 0, "", fmt.Errorf("reserve: script status has type %T", v[0])
	}
	var arg string
	if len(v) > 1 {
		switch a := v[1].(type) {
		case string:
			arg = a
		case int64:
			arg = strconv.FormatInt(a, 10)
		}
	}
	return n, arg, nil
}

// evalSteal runs steal.lua: it takes up to half of bucket's tokens and
// returns how many with the bucket's epoch; -1 when the shard's history
// (history, its key) is not the current one.
func evalSteal(ctx context.Context, c redis.Scripter, bucket, history string) (taken int, epoch string, err error) {
	v, err := stealScript.Run(ctx, c, []string{bucket, history}).Slice()
	if err != nil {
		return 0, "", invite.Unavailable(err)
	}
	n, epoch, err := decodePair(v)
	return int(n), epoch, err
}

// evalStealWait is evalSteal on one connection of node followed, when it
// took tokens, by WAIT on that connection: acked is WAIT's answer, -1 when
// nothing was taken (nothing written, nothing to wait for).
func evalStealWait(ctx context.Context, node *redis.Client, bucket, history string, replicas int, timeout time.Duration) (taken int, epoch string, acked int64, err error) {
	conn := node.Conn()
	defer conn.Close()
	if taken, epoch, err = evalSteal(ctx, conn, bucket, history); err != nil || taken <= 0 {
		return taken, epoch, -1, err
	}
	if acked, err = conn.Wait(ctx, replicas, timeout).Result(); err != nil {
		return taken, epoch, 0, invite.Unavailable(err)
	}
	return taken, epoch, acked, nil
}

// bucketFields is a new bucket's state (seed.lua, rebuild.lua's open step).
type bucketFields struct {
	tokens   int
	disabled bool
	expires  int64 // unix ms, 0: never
	epoch    string
	window   int64 // confirmation window in ms, 0: none (holds)
}

// dis is how a bucket holds disabled.
func (f bucketFields) dis() string {
	if f.disabled {
		return "1"
	}
	return "0"
}

// evalSeed runs seed.lua: it creates bucket with f unless it exists.
func evalSeed(ctx context.Context, c redis.Scripter, bucket string, f bucketFields) (created bool, err error) {
	n, err := seedScript.Run(ctx, c, []string{bucket}, f.tokens, f.dis(), f.expires, f.epoch, f.window).Int()
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return n == 1, nil
}

// bucketChange is what adjust.lua changes on an existing bucket.
type bucketChange struct {
	tokens   int    // > 0 added; < 0 up to -tokens free tokens removed
	disabled *bool  // set when not nil
	window   *int64 // confirmation window in ms, set when not nil; 0 removes it
}

// evalAdjust runs adjust.lua: it applies ch to bucket if it exists and,
// unless ch removes tokens, clears its sold-out mark. moved is the tokens
// added or removed; ok is false when there is no bucket (nothing changed).
func evalAdjust(ctx context.Context, c redis.Scripter, bucket string, ch bucketChange) (moved int, ok bool, err error) {
	dis := ""
	if ch.disabled != nil {
		dis = bucketFields{disabled: *ch.disabled}.dis()
	}
	cw := ""
	if ch.window != nil {
		cw = strconv.FormatInt(max(*ch.window, 0), 10)
	}
	n, err := adjustScript.Run(ctx, c, []string{bucket}, ch.tokens, dis, cw).Int()
	if err != nil {
		return 0, false, invite.Unavailable(err)
	}
	if n < 0 {
		return 0, false, nil
	}
	return n, true, nil
}

// evalFreeze runs freeze.lua: bucket refuses signups for ttl by Redis'
// clock on behalf of the reseed owner.
func evalFreeze(ctx context.Context, c redis.Scripter, bucket string, ttl time.Duration, owner string) error {
	if err := freezeScript.Run(ctx, c, []string{bucket}, ttl.Milliseconds(), owner).Err(); err != nil {
		return invite.Unavailable(err)
	}
	return nil
}

// evalRebuildZero runs rebuild.lua's first step: bucket's tokens go to 0.
// held is false when owner's freeze was lost (nothing changed).
func evalRebuildZero(ctx context.Context, c redis.Scripter, bucket, owner, epoch string) (held bool, err error) {
	n, err := rebuildScript.Run(ctx, c, []string{bucket}, owner, "zero", epoch).Int()
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return n == 1, nil
}

// evalRebuildOpen runs rebuild.lua's second step: bucket is replaced by f,
// unfrozen. held is false when owner's freeze was lost (nothing changed).
func evalRebuildOpen(ctx context.Context, c redis.Scripter, bucket, owner string, f bucketFields) (held bool, err error) {
	n, err := rebuildScript.Run(ctx, c, []string{bucket}, owner, "open", f.tokens, f.dis(), f.expires, f.epoch, f.window).Int()
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return n == 1, nil
}

// evalGiveBack runs giveback.lua: it returns the token of the reservation
// whose done marker is marker, once (returned is false when it was done
// before), and points claim at owner if it still names code.
func evalGiveBack(ctx context.Context, c redis.Scripter, bucket, claim, marker, code, owner string, markerTTL time.Duration) (returned bool, err error) {
	n, err := giveBackScript.Run(ctx, c, []string{bucket, claim, marker}, code, owner, markerTTL.Milliseconds()).Int()
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return n == 1, nil
}

// evalUnlock runs unlock.lua: it deletes lock if token holds it.
func evalUnlock(ctx context.Context, c redis.Scripter, lock, token string) (released bool, err error) {
	n, err := unlockScript.Run(ctx, c, []string{lock}, token).Int()
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return n == 1, nil
}

// LoadScripts loads every script into Redis (every master of a cluster), so
// the first signups after a start or a Redis restart run by SHA. Calls fall
// back to EVAL anyway; readiness waits for this so a replica enters
// rotation warm.
func (r *Reserver) LoadScripts(ctx context.Context) error {
	for _, s := range allScripts {
		if err := s.Load(ctx, r.rdb).Err(); err != nil {
			return invite.Unavailable(err)
		}
	}
	return nil
}

// evalHistory runs history.lua "get": the replication ID recorded for the
// shard of key history ("" if none) and Redis' current one ("" if Redis
// does not say).
func evalHistory(ctx context.Context, c redis.Scripter, history string) (recorded, current string, err error) {
	v, err := historyScript.Run(ctx, c, []string{history}, "get").StringSlice()
	if err != nil {
		return "", "", invite.Unavailable(err)
	}
	if len(v) != 2 {
		return "", "", fmt.Errorf("reserve: history.lua replied %d values", len(v))
	}
	return v[0], v[1], nil
}

// evalHistoryInit runs history.lua "init": it records the current ID for
// the shard unless one is recorded.
func evalHistoryInit(ctx context.Context, c redis.Scripter, history string) error {
	if err := historyScript.Run(ctx, c, []string{history}, "init").Err(); err != nil {
		return invite.Unavailable(err)
	}
	return nil
}

// evalHistorySet runs history.lua "set": it records the current ID if it
// is still from; ok is false when Redis moved to another history since.
func evalHistorySet(ctx context.Context, c redis.Scripter, history, from string) (ok bool, err error) {
	n, err := historyScript.Run(ctx, c, []string{history}, "set", from).Int()
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return n == 1, nil
}
