package reserve

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		n, k int
		want []int
	}{
		{10, 1, []int{10}},
		{10, 4, []int{3, 3, 2, 2}},
		{3, 5, []int{1, 1, 1, 0, 0}},
		{0, 3, []int{0, 0, 0}},
		{-4, 2, []int{0, 0}},
	}
	for _, tt := range tests {
		if got := split(tt.n, tt.k); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("split(%d, %d) = %v, want %v", tt.n, tt.k, got, tt.want)
		}
	}
}

// TestKeysShareShardTag: every key of one shard carries the same hash tag,
// so Redis Cluster puts them in one slot; even an email holding braces
// cannot change the tag, because Redis uses the first {...} only.
func TestKeysShareShardTag(t *testing.T) {
	k := newKeys("igv1", 16)
	for s := 0; s < 16; s++ {
		tag := fmt.Sprintf("{igv1:%d}", s)
		for _, key := range []string{k.sentinel(s), k.bucket(s, "code"), k.claim(s, "a{b}@x.io"), k.stream(s), k.givenBack(s, "1-1")} {
			if !strings.HasPrefix(key, tag+":") {
				t.Errorf("key %q does not start with %q", key, tag)
			}
		}
	}
}

func TestShardOfSpreads(t *testing.T) {
	counts := make([]int, 16)
	for i := 0; i < 16000; i++ {
		counts[shardOf(fmt.Sprintf("user%d@example.com", i), 16)]++
	}
	for s, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("shard %d got %d of 16000 emails, want about 1000", s, n)
		}
	}
	if shardOf("anything", 1) != 0 {
		t.Error("one shard must be shard 0")
	}
}

func TestDecodeReply(t *testing.T) {
	tests := []struct {
		in      []any
		want    reply
		wantErr bool
	}{
		{[]any{int64(1), "1700000000000-0"}, reply{status: stReserved, arg: "1700000000000-0"}, false},
		{[]any{int64(3), "other"}, reply{status: stTaken, arg: "other"}, false},
		{[]any{int64(9), int64(16)}, reply{status: stMismatch, arg: "16"}, false},
		{[]any{int64(4)}, reply{status: stSoldOut}, false},
		{[]any{int64(12), "1700000000000-0", "1700000060000"}, reply{status: stHeld, arg: "1700000000000-0", arg2: "1700000060000"}, false},
		{[]any{int64(12), "1700000000000-0", "1700000060000", int64(1)}, reply{status: stHeld, arg: "1700000000000-0", arg2: "1700000060000", again: true}, false},
		{[]any{}, reply{}, true},
		{[]any{"1"}, reply{}, true},
	}
	for _, tt := range tests {
		got, err := decodeReply(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("decodeReply(%v) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
