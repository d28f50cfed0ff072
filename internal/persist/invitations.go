package persist

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
)

// CreateInvitation inserts inv. It returns ErrInvalid for a bad code,
// max_uses or confirmation window and ErrExists when the code is taken.
func (s *Store) CreateInvitation(ctx context.Context, inv invite.Invitation) error {
	if !invite.ValidCode(inv.Code) {
		return fmt.Errorf("%w: code must be 1-64 characters of A-Z a-z 0-9 _ -", ErrInvalid)
	}
	if !invite.ValidMaxUses(inv.MaxUses) {
		return fmt.Errorf("%w: max_uses must be 1..%d", ErrInvalid, invite.MaxUsesLimit)
	}
	if !validWindow(inv.ConfirmWindow) {
		return fmt.Errorf("%w: %s", ErrInvalid, windowRange)
	}
	_, err := s.inv.InsertOne(ctx, invitationDoc(inv))
	if mongo.IsDuplicateKeyError(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return nil
}

// CreateInvitations inserts invs all together: it returns ErrInvalid or
// ErrExists (naming the code) before writing anything when one of them is
// bad or taken.
func (s *Store) CreateInvitations(ctx context.Context, invs []invite.Invitation) error {
	docs := make([]any, 0, len(invs))
	for _, inv := range invs {
		if !invite.ValidCode(inv.Code) || !invite.ValidMaxUses(inv.MaxUses) || !validWindow(inv.ConfirmWindow) {
			return fmt.Errorf("%w: %q", ErrInvalid, inv.Code)
		}
		n, err := s.inv.CountDocuments(ctx, bson.D{{Key: "_id", Value: inv.Code}})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDatabase, err)
		}
		if n > 0 {
			return fmt.Errorf("%w: %q", ErrExists, inv.Code)
		}
		docs = append(docs, invitationDoc(inv))
	}
	if len(docs) == 0 {
		return nil
	}
	if _, err := s.inv.InsertMany(ctx, docs); err != nil {
		// The ordered insert may have written the rows before the failing
		// one: not all or nothing any more.
		if mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("%w: %w: created concurrently", ErrPartial, ErrExists)
		}
		return fmt.Errorf("%w: %w: %w", ErrPartial, ErrDatabase, err)
	}
	return nil
}

// SetMaxUses changes code's max_uses from old to n. It returns ErrChanged
// when max_uses is no longer old (another admin was faster) and
// ErrNotFound when there is no such invitation.
func (s *Store) SetMaxUses(ctx context.Context, code string, old, n int) error {
	if !invite.ValidMaxUses(n) {
		return fmt.Errorf("%w: max_uses must be 1..%d", ErrInvalid, invite.MaxUsesLimit)
	}
	res, err := s.inv.UpdateOne(ctx, bson.D{{Key: "_id", Value: code}, {Key: "max_uses", Value: old}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "max_uses", Value: int32(n)}}}})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if res.MatchedCount == 0 {
		if _, ok, err := s.Invitation(ctx, code); err == nil && !ok {
			return ErrNotFound
		}
		return ErrChanged
	}
	return nil
}

// invitationDoc is inv as its document holds it; a field at its default
// (enabled, no expiry, no confirmation window) is left out.
func invitationDoc(inv invite.Invitation) bson.D {
	doc := bson.D{{Key: "_id", Value: inv.Code}, {Key: "max_uses", Value: int32(inv.MaxUses)}}
	if inv.Disabled {
		doc = append(doc, bson.E{Key: "disabled", Value: true})
	}
	if !inv.ExpiresAt.IsZero() {
		doc = append(doc, bson.E{Key: "expires_at", Value: inv.ExpiresAt})
	}
	if inv.ConfirmWindow != 0 {
		doc = append(doc, bson.E{Key: "confirm_window_ms", Value: inv.ConfirmWindow.Milliseconds()})
	}
	return doc
}

// windowRange says which confirmation windows are allowed.
var windowRange = fmt.Sprintf("confirm_window_ms must be %d..%d (%v..%v), or absent for none",
	invite.MinConfirmWindow.Milliseconds(), invite.MaxConfirmWindow.Milliseconds(), invite.MinConfirmWindow, invite.MaxConfirmWindow)

// validWindow reports whether d is no window (0) or an allowed one.
func validWindow(d time.Duration) bool { return d == 0 || invite.ValidConfirmWindow(d) }

// SetConfirmWindow sets code's confirmation window; 0 removes it (no
// confirmation). It returns ErrInvalid for a window out of range and
// ErrNotFound when there is no such invitation.
func (s *Store) SetConfirmWindow(ctx context.Context, code string, d time.Duration) error {
	if !validWindow(d) {
		return fmt.Errorf("%w: %s", ErrInvalid, windowRange)
	}
	upd := bson.D{{Key: "$unset", Value: bson.D{{Key: "confirm_window_ms", Value: ""}}}}
	if d != 0 {
		upd = bson.D{{Key: "$set", Value: bson.D{{Key: "confirm_window_ms", Value: d.Milliseconds()}}}}
	}
	res, err := s.inv.UpdateOne(ctx, bson.D{{Key: "_id", Value: code}}, upd)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// SetDisabled disables or enables code; ErrNotFound when there is none.
func (s *Store) SetDisabled(ctx context.Context, code string, disabled bool) error {
	res, err := s.inv.UpdateOne(ctx, bson.D{{Key: "_id", Value: code}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "disabled", Value: disabled}}}})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// Invitation returns the invitation named code. ok is false when there is
// none, or when its document is unusable (logged).
func (s *Store) Invitation(ctx context.Context, code string) (invite.Invitation, bool, error) {
	raw, err := s.inv.FindOne(ctx, bson.D{{Key: "_id", Value: code}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return invite.Invitation{}, false, nil
	}
	if err != nil {
		return invite.Invitation{}, false, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	inv, err := decodeInvitation(raw)
	if err != nil {
		s.log.WithError(err).WithField("code", code).Error("ignoring unusable invitation document")
		return invite.Invitation{}, false, nil
	}
	return inv, true, nil
}

// Invitations returns every usable invitation; unusable documents are
// logged and skipped.
func (s *Store) Invitations(ctx context.Context) ([]invite.Invitation, error) {
	cur, err := s.inv.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	var out []invite.Invitation
	for cur.Next(ctx) {
		inv, err := decodeInvitation(cur.Current)
		if err != nil {
			s.log.WithError(err).WithField("code", cur.Current.Lookup("_id").String()).Error("ignoring unusable invitation document")
			continue
		}
		out = append(out, inv)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return out, nil
}

// decodeInvitation reads an invitation written by invitectl or by any other
// tool: max_uses (and confirm_window_ms) may be an int32, an int64 or a
// double holding an integer.
func decodeInvitation(raw bson.Raw) (invite.Invitation, error) {
	var inv invite.Invitation
	id, ok := raw.Lookup("_id").StringValueOK()
	if !ok || !invite.ValidCode(id) {
		return inv, errors.New("_id is not a valid invitation code")
	}
	inv.Code = id
	mu := raw.Lookup("max_uses")
	var n int64
	switch mu.Type {
	case bson.TypeInt32:
		n = int64(mu.Int32())
	case bson.TypeInt64:
		n = mu.Int64()
	case bson.TypeDouble:
		f := mu.Double()
		if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) || f < 0 || f > invite.MaxUsesLimit {
			return inv, fmt.Errorf("max_uses %v is not an integer in range", f)
		}
		n = int64(f)
	default:
		return inv, fmt.Errorf("max_uses has BSON type %s, want int32, int64 or integral double", mu.Type)
	}
	if n < 1 || n > invite.MaxUsesLimit {
		return inv, fmt.Errorf("max_uses %d out of range 1..%d", n, invite.MaxUsesLimit)
	}
	inv.MaxUses = int(n)
	if d := raw.Lookup("disabled"); d.Type == bson.TypeBoolean {
		inv.Disabled = d.Boolean()
	}
	if e := raw.Lookup("expires_at"); e.Type == bson.TypeDateTime {
		inv.ExpiresAt = e.Time().UTC()
	}
	w, err := decodeWindow(raw.Lookup("confirm_window_ms"))
	if err != nil {
		return inv, err
	}
	inv.ConfirmWindow = w
	return inv, nil
}

// decodeWindow reads confirm_window_ms, which another tool may write as
// well: absent, null or 0 is no window; otherwise milliseconds as an
// int32, an int64 or a double holding an integer, within
// invite.MinConfirmWindow..MaxConfirmWindow. Anything else makes the
// invitation unusable, as a bad max_uses does: guessing a window (or
// none) would admit differently than its author meant.
func decodeWindow(v bson.RawValue) (time.Duration, error) {
	var ms int64
	switch v.Type {
	case 0, bson.TypeNull: // absent, null
		return 0, nil
	case bson.TypeInt32:
		ms = int64(v.Int32())
	case bson.TypeInt64:
		ms = v.Int64()
	case bson.TypeDouble:
		f := v.Double()
		if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) || f < 0 || f > float64(invite.MaxConfirmWindow.Milliseconds()) {
			return 0, fmt.Errorf("confirm_window_ms %v is not an integer in range", f)
		}
		ms = int64(f)
	default:
		return 0, fmt.Errorf("confirm_window_ms has BSON type %s, want int32, int64 or integral double", v.Type)
	}
	if ms == 0 {
		return 0, nil
	}
	// Compared in ms: a huge value times a millisecond would wrap around.
	if ms >= invite.MinConfirmWindow.Milliseconds() && ms <= invite.MaxConfirmWindow.Milliseconds() {
		return time.Duration(ms) * time.Millisecond, nil
	}
	return 0, fmt.Errorf("confirm_window_ms %d out of range %d..%d", ms, invite.MinConfirmWindow.Milliseconds(), invite.MaxConfirmWindow.Milliseconds())
}
