package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

type logTail string

func (l logTail) String() string {
	b, _ := os.ReadFile(string(l))
	if len(b) > 4000 {
		return string(b[:2000]) + "\n...\n" + string(b[len(b)-2000:])
	}
	return string(b)
}

// startNginx runs nginx with the shipped deploy/nginx files; only the
// upstream list, the listen address and the scratch paths differ.
func startNginx(t *testing.T, listen string, upstreams []string) {
	t.Helper()
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/nginx"); err2 != nil {
			t.Fatal("nginx not found: install it (apt-get install -y nginx-light); the rolling-restart test needs it")
		}
		nginx = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	copyConf := func(name string, edit func(string) string) {
		b, err := os.ReadFile(filepath.Join("../../deploy/nginx", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/tmp/", dir+"/")
		if edit != nil {
			s = edit(s)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyConf("nginx.conf", nil)
	copyConf("invitegate.conf", func(s string) string {
		return regexp.MustCompile(`listen \d+;`).ReplaceAllString(s, "listen "+listen+";")
	})
	copyConf("upstream.conf", func(s string) string {
		return regexp.MustCompile(`server api\d:8080`).ReplaceAllStringFunc(s, func(m string) string {
			i := int(m[len("server api")] - '1')
			return "server " + upstreams[i]
		})
	})
	// A file, not a pipe: nginx's workers inherit it, and a pipe would keep
	// Wait waiting for them.
	logPath := filepath.Join(dir, "nginx.log")
	if p := os.Getenv("NGINX_LOG"); p != "" {
		logPath = p
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	out := logTail(logPath)
	cmd := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // the master stops its workers
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("nginx log:\n%s", out.String())
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("nginx exited:\n%s", out.String())
		default:
		}
		if i > 200 {
			t.Fatalf("nginx not listening:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRollingRestartBehindNginx: two replicas behind the shipped nginx
// config under continuous load; each is restarted in turn (SIGTERM, new
// process). No request may fail, and every 2xx signup reaches MongoDB.
func TestRollingRestartBehindNginx(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs nginx")
	}
	ctx := context.Background()
	bin := testenv.BuildInvitegate(t)
	redisAddr := testenv.StartRedis(t, testenv.RedisOptions{AOF: true}).Addr
	mongoURI, db := testenv.Mongo(t), testenv.DBName(t)
	mc, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Disconnect(ctx)
	store := persist.NewStore(mc.Database(db), nil, nil)
	if err := store.CreateInvitation(ctx, invite.Invitation{Code: "roll", MaxUses: 1000}); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"INVITEGATE_REDIS_ADDRS=" + redisAddr, "INVITEGATE_MONGO_URI=" + mongoURI, "INVITEGATE_MONGO_DB=" + db,
		"INVITEGATE_SHARDS=4", "INVITEGATE_SHUTDOWN_GRACE=500ms", "INVITEGATE_SHUTDOWN_TIMEOUT=10s", "INVITEGATE_LOG_LEVEL=warn",
	}
	replicas := []*testenv.Process{
		testenv.NewProcess(t, bin, "serve", env...),
		testenv.NewProcess(t, bin, "serve", env...),
	}
	for _, r := range replicas {
		r.Start(t)
	}
	lb := testenv.FreeAddr(t)
	startNginx(t, lb, []string{replicas[0].Public, replicas[1].Public})

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var sent, failed, resent atomic.Int64
	var mu sync.Mutex
	admitted := map[string]bool{}
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				em := fmt.Sprintf("w%d-%d@example.com", w, i)
				sent.Add(1)
				resp, err := client.Post("http://"+lb+"/invitations/roll", "application/json", strings.NewReader(`{"email":"`+em+`"}`))
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 201, 200:
					if resp.StatusCode == 200 {
						resent.Add(1)
					}
					// Every email is sent once, so a 200 means nginx resent
					// it after the first replica reserved it and closed
					// without answering (proxy_next_upstream): the signup
					// is acknowledged all the same.
					mu.Lock()
					admitted[em] = true
					mu.Unlock()
				case 410:
				default:
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
				}
				time.Sleep(2 * time.Millisecond) // keep the code from filling before the restarts end
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	for _, r := range replicas {
		r.Stop(t)
		r.Start(t)
		time.Sleep(700 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	t.Logf("sent %d, admitted %d (%d of them answered 200 after a resend), failed %d", sent.Load(), len(admitted), resent.Load(), failed.Load())
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed during the rolling restart; first: %v", n, sent.Load(), firstFailure.Load())
	}
	if len(admitted) == 0 || len(admitted) > 1000 {
		t.Fatalf("admitted %d", len(admitted))
	}
	// The reconciler drains at the machine's pace: fail only after 30 s
	// without progress, not after 30 s in all.
	last, deadline := -1, time.Now().Add(30*time.Second)
	for {
		n, err := store.Count(ctx, "roll")
		if err == nil && n == len(admitted) {
			break
		}
		if err == nil && n > last {
			last, deadline = n, time.Now().Add(30*time.Second)
		}
		if time.Now().After(deadline) {
			t.Fatalf("MongoDB has %d registrations, %d were acknowledged, none more for 30 s (%v)", n, len(admitted), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stored := map[string]bool{}
	store.ForEachRegistration(ctx, "roll", func(canonical, _ string) error { stored[canonical] = true; return nil })
	for em := range admitted {
		if !stored[em] {
			t.Fatalf("acknowledged signup %s is not in MongoDB", em)
		}
	}
}
