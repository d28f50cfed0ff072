package reserve

import (
	"context"
	"fmt"
	"strconv"

	"github.com/invitegate/invitegate/internal/invite"
)

// SeatHints hands out need[code] seat numbers of each code, first..first+
// need-1, that no other call was handed, in one call (seathint.lua): MongoDB's cap
// (persist.Store) tries them first, so writers in different processes do
// not pick the same seats while a code fills. They are hints: a number may
// be at or above max_uses, or taken (the counter went back with a
// failover, a wipe); the unique seat index in MongoDB decides, and the
// writer then picks another. It returns an error wrapping
// invite.ErrUnavailable.
func (r *Reserver) SeatHints(ctx context.Context, need map[string]int) (map[string]int, error) {
	return r.seatHint(ctx, "take", need)
}

// RaiseSeatHints moves each code's next hint up to at least at[code] (a
// writer found the seats below it taken), atomically: never down, and
// never past at[code] because of another call.
func (r *Reserver) RaiseSeatHints(ctx context.Context, at map[string]int) error {
	_, err := r.seatHint(ctx, "raise", at)
	return err
}

func (r *Reserver) seatHint(ctx context.Context, op string, in map[string]int) (map[string]int, error) {
	if len(in) == 0 {
		return nil, nil
	}
	codes := make([]string, 0, len(in))
	keys := make([]string, 0, len(in))
	args := []any{op}
	for code, n := range in {
		codes = append(codes, code)
		keys = append(keys, r.keys.seatHint(code))
		args = append(args, strconv.Itoa(n))
	}
	res, err := seatHintScript.Run(ctx, r.rdb, keys, args...).Int64Slice()
	if err != nil {
		return nil, invite.Unavailable(err)
	}
	if len(res) != len(codes) {
		return nil, invite.Unavailable(fmt.Errorf("seathint.lua answered %d values for %d codes", len(res), len(codes)))
	}
	out := make(map[string]int, len(codes))
	for i, c := range codes {
		out[c] = int(res[i])
	}
	return out, nil
}
