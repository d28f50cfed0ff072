package persist

import (
	"math"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestDecodeInvitation(t *testing.T) {
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		doc     bson.D
		wantMax int
		wantErr bool
	}{
		{"int32", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: int32(10)}}, 10, false},
		{"int64", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: int64(1000)}}, 1000, false},
		{"integral double", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: 7.0}}, 7, false},
		{"fractional double", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: 7.5}}, 0, true},
		{"string", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: "10"}}, 0, true},
		{"missing", bson.D{{Key: "_id", Value: "a"}}, 0, true},
		{"zero", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: int32(0)}}, 0, true},
		{"too big", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: int64(1001)}}, 0, true},
		{"huge double", bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: 1e300}}, 0, true},
		{"bad id", bson.D{{Key: "_id", Value: "a/b"}, {Key: "max_uses", Value: int32(1)}}, 0, true},
		{"non-string id", bson.D{{Key: "_id", Value: int32(5)}, {Key: "max_uses", Value: int32(1)}}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := bson.Marshal(tt.doc)
			if err != nil {
				t.Fatal(err)
			}
			inv, err := decodeInvitation(raw)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && inv.MaxUses != tt.wantMax {
				t.Fatalf("MaxUses = %d, want %d", inv.MaxUses, tt.wantMax)
			}
		})
	}
	raw, _ := bson.Marshal(bson.D{{Key: "_id", Value: "x"}, {Key: "max_uses", Value: int32(3)}, {Key: "disabled", Value: true}, {Key: "expires_at", Value: exp}})
	inv, err := decodeInvitation(raw)
	if err != nil || !inv.Disabled || !inv.ExpiresAt.Equal(exp) {
		t.Fatalf("got %+v, %v; want disabled, expiring %v", inv, err, exp)
	}
}

// TestDecodeConfirmWindow: confirm_window_ms as invitectl or another tool
// may write it. A bad value makes the invitation unusable, as a bad
// max_uses does.
func TestDecodeConfirmWindow(t *testing.T) {
	tests := []struct {
		name    string
		value   any // nil: the field is absent
		want    time.Duration
		wantErr bool
	}{
		{"absent", nil, 0, false},
		{"null", bson.Null{}, 0, false},
		{"zero", int32(0), 0, false},
		{"zero double", 0.0, 0, false},
		{"int32", int32(30000), 30 * time.Second, false},
		{"int64", int64(1800000), 30 * time.Minute, false},
		{"integral double", 60000.0, time.Minute, false},
		{"minimum", int32(1000), time.Second, false},
		{"maximum", int64(604800000), 7 * 24 * time.Hour, false},
		{"below minimum", int32(999), 0, true},
		{"above maximum", int64(604800001), 0, true},
		{"negative", int32(-1000), 0, true},
		{"negative double", -1000.0, 0, true},
		{"huge", int64(math.MaxInt64), 0, true},
		{"wraps to 1s in ns", int64(1<<58 + 1000), 0, true}, // (2^58+1000) ms = 15625·2^64 + 10^9 ns
		{"fractional double", 1000.5, 0, true},
		{"huge double", 1e300, 0, true},
		{"NaN", math.NaN(), 0, true},
		{"string", "30m", 0, true},
		{"bool", true, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := bson.D{{Key: "_id", Value: "a"}, {Key: "max_uses", Value: int32(5)}}
			if tt.value != nil {
				doc = append(doc, bson.E{Key: "confirm_window_ms", Value: tt.value})
			}
			raw, err := bson.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			inv, err := decodeInvitation(raw)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (inv.ConfirmWindow != tt.want || inv.MaxUses != 5) {
				t.Fatalf("ConfirmWindow = %v, MaxUses %d; want %v, 5", inv.ConfirmWindow, inv.MaxUses, tt.want)
			}
		})
	}
}
