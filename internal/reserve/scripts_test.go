package reserve

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/invitegate/invitegate/internal/testenv"
)

// TestEveryScriptListed: every .lua file in scripts/lua is made by script,
// so LoadScripts loads it.
func TestEveryScriptListed(t *testing.T) {
	listed := map[string]bool{}
	for _, s := range allScripts {
		listed[s.Hash()] = true
	}
	files, err := filepath.Glob("../../scripts/lua/*.lua")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts found: %v", err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha1.Sum(src)
		if !listed[hex.EncodeToString(sum[:])] {
			t.Errorf("%s is not in allScripts (make it with script)", filepath.Base(f))
		}
	}
	if len(allScripts) != len(files) {
		t.Errorf("%d scripts listed, %d .lua files", len(allScripts), len(files))
	}
}

// TestAdjust: adjust.lua's changes of an existing bucket, and none of a
// missing one.
func TestAdjust(t *testing.T) {
	ctx := context.Background()
	rdb := sharedRedis(t)
	k := newKeys(testenv.KeyPrefix(t), 1)
	yes, no := true, false
	var none, minute int64 = 0, 60000
	for _, tt := range []struct {
		name   string
		ch     bucketChange
		moved  int
		tok    string
		so     string
		dis    string
		before int    // tokens
		cw     string // the window after; the bucket has 5000 before, "": none
	}{
		{"add", bucketChange{tokens: 3}, 3, "5", "0", "0", 2, "5000"},
		{"add none", bucketChange{}, 0, "2", "0", "0", 2, "5000"},
		{"remove some", bucketChange{tokens: -1}, 1, "1", "9999", "0", 2, "5000"},
		{"remove more than free", bucketChange{tokens: -5}, 2, "0", "9999", "0", 2, "5000"},
		{"remove from empty", bucketChange{tokens: -5}, 0, "0", "9999", "0", 0, "5000"},
		{"disable", bucketChange{disabled: &yes}, 0, "2", "0", "1", 2, "5000"},
		{"enable", bucketChange{disabled: &no}, 0, "2", "0", "0", 2, "5000"},
		{"set window", bucketChange{window: &minute}, 0, "2", "0", "0", 2, "60000"},
		{"clear window", bucketChange{window: &none}, 0, "2", "0", "0", 2, ""},
		{"disable, clear window", bucketChange{disabled: &yes, window: &none}, 0, "2", "0", "1", 2, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := k.bucket(0, tt.name)
			if err := rdb.HSet(ctx, b, "tok", tt.before, "so", 9999, "dis", 0, "sl", "x", "cw", 5000).Err(); err != nil {
				t.Fatal(err)
			}
			moved, ok, err := evalAdjust(ctx, rdb, b, tt.ch)
			if err != nil || !ok || moved != tt.moved {
				t.Fatalf("evalAdjust = %d, %v, %v; want %d, true", moved, ok, err, tt.moved)
			}
			got := rdb.HGetAll(ctx, b).Val()
			want := map[string]string{"tok": tt.tok, "so": tt.so, "dis": tt.dis, "sl": "x"}
			if tt.cw != "" {
				want["cw"] = tt.cw
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("bucket %v, want %v", got, want)
			}
		})
	}
	b := k.bucket(0, "none")
	if moved, ok, err := evalAdjust(ctx, rdb, b, bucketChange{tokens: 1, disabled: &yes, window: &minute}); err != nil || ok || moved != 0 {
		t.Fatalf("no bucket: %d, %v, %v; want 0, false", moved, ok, err)
	}
	if n := rdb.Exists(ctx, b).Val(); n != 0 {
		t.Fatal("adjust.lua created a bucket")
	}
}
