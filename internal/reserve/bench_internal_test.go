package reserve

import "testing"

// Benchmarks of the per-request work around the one Redis call: picking
// the shard, building the keys and decoding the script's reply.
//
//	go test -run '^$' -bench . -benchmem ./internal/reserve

func BenchmarkShardOf(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = shardOf("someone.else@example.com", 16)
	}
}

func BenchmarkKeys(b *testing.B) {
	k := newKeys("igv1", 16)
	b.ReportAllocs()
	for b.Loop() {
		s := shardOf("someone.else@example.com", 16)
		_, _, _ = k.claim(s, "someone.else@example.com"), k.bucket(s, "twitter-reg1"), k.stream(s)
	}
}

func BenchmarkDecodeReply(b *testing.B) {
	v := []any{int64(stReserved), "1732500000000-0"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeReply(v); err != nil {
			b.Fatal(err)
		}
	}
}
