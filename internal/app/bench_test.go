package app_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/testenv"
)

// BenchmarkSignup measures what a signup costs end to end over HTTP per
// acknowledgement mode, against a redis-server with appendfsync always and
// the MongoDB-wire server, with 32 concurrent clients: "new" is a new email
// every request (201), "repeat" the same 1,000 registered emails again
// (200). docs/BENCHMARKS.md records the numbers.
//
//	go test -run '^$' -bench BenchmarkSignup -benchtime 5000x ./internal/app
func BenchmarkSignup(b *testing.B) {
	for _, ack := range []string{config.AckRedis, config.AckMongo} {
		for _, kind := range []string{"new", "repeat"} {
			b.Run("ack="+ack+"/"+kind, func(b *testing.B) {
				benchSignups(b, ack, kind == "repeat")
			})
		}
	}
}

func benchSignups(b *testing.B, ack string, repeat bool) {
	e := newEnv(b, deployments[0])
	e.cfg.RedisAddrs = []string{testenv.StartRedis(b, testenv.RedisOptions{AOF: true, AppendFsync: "always"}).Addr}
	e.cfg.Ack = ack
	codes := b.N/1000 + 1
	if repeat {
		codes = 1
	}
	for i := 0; i < codes; i++ {
		e.create(b, fmt.Sprintf("bench-%d", i), 1000)
	}
	m, _ := e.start(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(n int64) error {
		code, em := n/1000, n
		if repeat {
			code, em = 0, n%1000
		}
		resp, err := client.Post(fmt.Sprintf("http://%s/invitations/bench-%d", m.PublicAddr, code),
			"application/json", strings.NewReader(fmt.Sprintf(`{"email":"b%d@example.com"}`, em)))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		want := http.StatusCreated
		if repeat {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
		}
		return nil
	}
	if repeat {
		for i := int64(0); i < 1000; i++ {
			if err := post(i); err != nil && !strings.Contains(err.Error(), "status 201") {
				b.Fatal(err)
			}
		}
		e.waitPersisted(b, "bench-0", 1000)
	}
	var next atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := post(next.Add(1) - 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
