package app_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRateLimitPerClient runs the Redis-backed limiter (redis_rate) on a
// real redis-server and a real cluster: a client, known by the address
// its trusted proxy forwards, gets its burst and then 429 with
// Retry-After, and the refused attempt stores nothing; another client is
// not affected.
func TestRateLimitPerClient(t *testing.T) {
	for _, d := range []deployment{deployments[0], deployments[3]} {
		t.Run(d.name, func(t *testing.T) {
			e := newEnv(t, d)
			e.cfg.RateLimit = "3/m"
			e.cfg.TrustedProxies = []string{"127.0.0.1"}
			e.create(t, "limited", 100)
			m, _ := e.start(t)
			send := func(client, em string) *http.Response {
				req, _ := http.NewRequest("POST", "http://"+m.PublicAddr+"/invitations/limited", strings.NewReader(`{"email":"`+em+`"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Forwarded-For", client)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp
			}
			var got []int
			var last *http.Response
			for _, em := range []string{"a1@example.com", "a2@example.com", "a3@example.com", "a4@example.com"} {
				last = send("198.51.100.1", em)
				got = append(got, last.StatusCode)
			}
			if fmt.Sprint(got) != "[201 201 201 429]" {
				t.Fatalf("client A: %v, want [201 201 201 429]", got)
			}
			if ra, err := strconv.Atoi(last.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
				t.Fatalf("Retry-After %q, want 1..60 seconds", last.Header.Get("Retry-After"))
			}
			if st := send("198.51.100.2", "b1@example.com").StatusCode; st != 201 {
				t.Fatalf("client B: %d, want 201", st)
			}
			e.waitPersisted(t, "limited", 4)
			if _, ok, err := e.store.Registration(context.Background(), "a4@example.com"); err != nil || ok {
				t.Fatalf("the refused attempt was stored (ok %v, err %v)", ok, err)
			}
		})
	}
}

// TestSlowClients: a client that sends its headers or its body too slowly
// is cut off after INVITEGATE_HTTP_READ_TIMEOUT, and INVITEGATE_MAX_CONNS
// bounds the connections one replica holds; neither stops others from
// being served.
func TestSlowClients(t *testing.T) {
	e := newEnv(t, deployments[0])
	e.cfg.ReadTimeout = 300 * time.Millisecond
	e.cfg.MaxConns = 3
	e.create(t, "slow", 100)
	m, _ := e.start(t)

	// closed reports whether the server closed conn within d.
	closed := func(conn net.Conn, d time.Duration) bool {
		conn.SetReadDeadline(time.Now().Add(d))
		_, err := io.ReadAll(conn)
		var ne net.Error
		return err == nil || !(errors.As(err, &ne) && ne.Timeout())
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", m.PublicAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	headers := dial() // slowloris: headers that never end
	fmt.Fprint(headers, "POST /invitations/slow HTTP/1.1\r\nHost: x\r\n")
	body := dial() // headers done, the body never comes
	fmt.Fprint(body, "POST /invitations/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"email\":")
	if !closed(headers, 5*time.Second) {
		t.Fatal("a client that never finished its headers kept its connection")
	}
	if !closed(body, 5*time.Second) {
		t.Fatal("a client that never finished its body kept its connection")
	}

	// Three connections held open fill the listener; a fourth client
	// waits in the backlog until one of them goes.
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c := dial()
		rawPost(c, fmt.Sprintf("h%d@example.com", i))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("held connection %d: %v %v", i, resp, err)
		}
		held = append(held, c) // kept alive, idle
	}
	fourth := dial()
	rawPost(fourth, "four@example.com")
	fourth.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := bufio.NewReader(fourth).ReadByte(); err == nil {
		t.Fatal("a fourth connection was served while MAX_CONNS=3 were open")
	}
	held[0].Close()
	fourth.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(fourth), nil)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("fourth connection after one closed: %v %v", resp, err)
	}
}

// rawPost writes one signup request for code "slow" on a raw connection.
func rawPost(c net.Conn, em string) {
	body := `{"email":"` + em + `"}`
	fmt.Fprintf(c, "POST /invitations/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}
