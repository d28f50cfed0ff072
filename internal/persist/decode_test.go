package persist

import (
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
