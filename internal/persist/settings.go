package persist

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// CheckShards records the deployment's shard count on first start and
// returns ErrSettingsMismatch when a later start uses another one: emails
// would hash to other shards and claims would no longer be unique.
func (s *Store) CheckShards(ctx context.Context, shards int) error {
	return s.checkSetting(ctx, "shards", int64(shards))
}

// CheckEmailRule does the same for the rule that makes canonical emails
// (whether +tags are dropped for every domain): replicas that disagree
// would let one mailbox hold two invitations.
func (s *Store) CheckEmailRule(ctx context.Context, stripPlusAll bool) error {
	return s.checkSetting(ctx, "email_strip_plus_all", stripPlusAll)
}

// checkSetting stores value under id on first use and returns
// ErrSettingsMismatch (wrapped with the names) when a later value differs.
func (s *Store) checkSetting(ctx context.Context, id string, value any) error {
	_, err := s.settings.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "value", Value: value}})
	if err == nil {
		return nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	raw, err := s.settings.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	stored := raw.Lookup("value")
	same := false
	switch v := value.(type) {
	case int64:
		n, ok := stored.AsInt64OK()
		same = ok && n == v
	case bool:
		b, ok := stored.BooleanOK()
		same = ok && b == v
	}
	if !same {
		return fmt.Errorf("%w: %s was created as %s, configured %v", ErrSettingsMismatch, id, stored.String(), value)
	}
	return nil
}

// Shards returns the shard count the deployment recorded; ok is false
// before the first service start.
func (s *Store) Shards(ctx context.Context) (shards int, ok bool, err error) {
	ok, err = s.setting(ctx, "shards", &shards)
	return shards, ok, err
}

// setting decodes the value recorded under id into value; ok is false when
// nothing is recorded.
func (s *Store) setting(ctx context.Context, id string, value any) (ok bool, err error) {
	raw, err := s.settings.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err == nil {
		err = raw.Lookup("value").Unmarshal(value)
	}
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return true, nil
}

// Reserver returns the reservation path the deployment recorded, without
// recording one (ok false: none yet).
func (s *Store) Reserver(ctx context.Context) (mode string, ok bool, err error) {
	ok, err = s.setting(ctx, "reserver", &mode)
	return mode, ok, err
}

// ExpectReserver returns ErrSettingsMismatch when the deployment recorded
// another reservation path than mode; it records nothing.
func (s *Store) ExpectReserver(ctx context.Context, mode string) error {
	recorded, ok, err := s.Reserver(ctx)
	if err != nil {
		return err
	}
	if ok && recorded != mode {
		return fmt.Errorf("%w: reserver was created as %q, configured %q", ErrSettingsMismatch, recorded, mode)
	}
	return nil
}

// CheckReserver records which reservation path the deployment uses
// ("redis" or "mongo") on first start and returns ErrSettingsMismatch when a
// process is configured with the other: the MongoDB path counts seats in
// the seats collection, which the Redis path does not maintain. fresh is
// true when this call recorded the path (the first start, or the first
// after an operator removed the setting to switch paths).
func (s *Store) CheckReserver(ctx context.Context, mode string) (fresh bool, err error) {
	_, err = s.settings.InsertOne(ctx, bson.D{{Key: "_id", Value: "reserver"}, {Key: "value", Value: mode}})
	if err == nil {
		// A path starts (again): registrations made meanwhile by the other
		// path have no seats yet.
		if _, err := s.settings.DeleteOne(ctx, bson.D{{Key: "_id", Value: seatedSetting}}); err != nil {
			return true, fmt.Errorf("%w: %w", ErrDatabase, err)
		}
		return true, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return false, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return false, s.ExpectReserver(ctx, mode)
}

// GeneratedConfirmSecret returns the deployment's generated secret for
// the confirmation links' tokens, creating it (32 random bytes, hex) on
// first use with a unique insert, so every replica that asks gets the
// same one. It serves deployments that set no INVITEGATE_CONFIRM_SECRET;
// whoever can read the settings collection can then make tokens.
func (s *Store) GeneratedConfirmSecret(ctx context.Context) (string, error) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // never fails (crypto/rand)
	_, err := s.settings.InsertOne(ctx, bson.D{{Key: "_id", Value: "confirm_secret"}, {Key: "value", Value: hex.EncodeToString(raw)}})
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return "", fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	var secret string
	if ok, err := s.setting(ctx, "confirm_secret", &secret); err != nil {
		return "", err
	} else if !ok {
		return "", fmt.Errorf("%w: the generated confirmation secret is missing", ErrDatabase)
	}
	return secret, nil
}
