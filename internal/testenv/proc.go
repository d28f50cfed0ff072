package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/embedded"
)

// buildInvitegate builds cmd/invitegate, once per test process.
var buildInvitegate = sync.OnceValues(func() (string, error) {
	dir, err := processDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "invitegate")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/invitegate/invitegate/cmd/invitegate").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// BuildInvitegate builds cmd/invitegate once per test process and returns
// the binary's path. It fails the test if the build fails.
func BuildInvitegate(tb testing.TB) string {
	tb.Helper()
	return shared(tb, "go build of cmd/invitegate", buildInvitegate)
}

// Process is one invitegate process (serve or reconcile) started from a
// binary, on fixed loopback addresses that stay the same across restarts.
type Process struct {
	Bin    string
	Mode   string // "serve" or "reconcile"
	Env    []string
	Public string // host:port of the public listener (serve)
	Admin  string // host:port of the admin listener

	proc
	out *Buffer
}

// NewProcess returns a Process on fresh free addresses; Start runs it. It
// is stopped when the test ends.
func NewProcess(tb testing.TB, bin, mode string, env ...string) *Process {
	tb.Helper()
	SkipIfShort(tb, "an invitegate process")
	p := &Process{Bin: bin, Mode: mode, Env: env, Public: FreeAddr(tb), Admin: FreeAddr(tb), out: &Buffer{}}
	tb.Cleanup(func() {
		_ = p.signal(syscall.SIGTERM)
		if !p.wait(30 * time.Second) {
			_ = p.signal(syscall.SIGKILL)
			p.wait(5 * time.Second)
		}
		if tb.Failed() {
			tb.Logf("invitegate %s (%s) output:\n%s", p.Mode, p.Public, p.Output())
		}
	})
	return p
}

// Start runs the process and waits until /readyz answers 200; it fails the
// test if the process exits or is not ready within 30s.
func (p *Process) Start(tb testing.TB) {
	tb.Helper()
	cmd := exec.Command(p.Bin, p.Mode)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Env = append(cmd.Env, "INVITEGATE_HTTP_ADDR="+p.Public, "INVITEGATE_ADMIN_ADDR="+p.Admin)
	fmt.Fprintf(p.out, "--- start %s\n", time.Now().Format(time.StampMilli))
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, err := p.start(cmd)
	if err != nil {
		tb.Fatalf("testenv: start invitegate: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for Readyz(p.Admin) != http.StatusOK {
		select {
		case <-done:
			tb.Fatalf("testenv: invitegate %s exited at start:\n%s", p.Mode, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: invitegate %s not ready after 30s:\n%s", p.Mode, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends SIGTERM, as an orchestrator does, and waits up to 30s for a
// clean exit; it fails the test on a timeout or a non-zero exit code.
func (p *Process) Stop(tb testing.TB) {
	tb.Helper()
	_ = p.signal(syscall.SIGTERM)
	if !p.wait(30 * time.Second) {
		_ = p.signal(syscall.SIGKILL)
		tb.Fatalf("testenv: invitegate %s did not exit within 30s of SIGTERM:\n%s", p.Mode, p.Output())
	}
	p.mu.Lock()
	code := p.cmd.ProcessState.ExitCode()
	p.mu.Unlock()
	if code != 0 {
		tb.Fatalf("testenv: invitegate %s exit code %d:\n%s", p.Mode, code, p.Output())
	}
}

// Kill sends SIGKILL and waits until the process is gone: no shutdown, no
// drain, connections cut mid-request.
func (p *Process) Kill(tb testing.TB) {
	tb.Helper()
	_ = p.signal(syscall.SIGKILL)
	if !p.wait(10 * time.Second) {
		tb.Fatalf("testenv: invitegate %s survived SIGKILL", p.Mode)
	}
}

// Pause stops the process with SIGSTOP: it holds whatever it was doing.
func (p *Process) Pause(tb testing.TB) {
	tb.Helper()
	_ = p.signal(syscall.SIGSTOP)
}

// Resume continues a process stopped by Pause.
func (p *Process) Resume(tb testing.TB) {
	tb.Helper()
	_ = p.signal(syscall.SIGCONT)
}

// Output returns what the process wrote to stdout and stderr so far.
func (p *Process) Output() string {
	s := p.out.String()
	if len(s) > 6000 {
		s = s[:2000] + "\n...\n" + s[len(s)-4000:]
	}
	return s
}

// proc is a child process once started: its command, and a channel closed
// once it has exited and been reaped. Process, Child and RedisServer embed
// it.
type proc struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// start starts cmd (on the spawn thread, see startOnSpawnThread) in place
// of the one before; the channel it returns is closed once cmd has exited.
func (p *proc) start(cmd *exec.Cmd) (<-chan struct{}, error) {
	if err := startOnSpawnThread(cmd); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return done, nil
}

// Pid is the process ID of the running process (0 before it started).
func (p *proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// signal sends sig to the process; nothing if it never started.
func (p *proc) signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	return cmd.Process.Signal(sig)
}

// wait reports whether the process exited within d (true if never started).
func (p *proc) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill sends SIGKILL and waits until the process has been reaped; nothing
// if it never started.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill() // fails harmlessly if it already exited
	<-done
}

// Buffer is a bytes.Buffer safe for concurrent writers: process output,
// a logger shared by goroutines.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Pause stops the server with SIGSTOP: it keeps its port and accepts
// connections in the kernel's backlog but answers nothing, like a hung or
// partitioned Redis. Resume undoes it.
func (r *RedisServer) Pause(tb testing.TB) {
	tb.Helper()
	if err := r.signal(syscall.SIGSTOP); err != nil {
		tb.Fatalf("testenv: SIGSTOP redis-server: %v", err)
	}
}

// Resume continues a server stopped by Pause.
func (r *RedisServer) Resume(tb testing.TB) {
	tb.Helper()
	if err := r.signal(syscall.SIGCONT); err != nil {
		tb.Fatalf("testenv: SIGCONT redis-server: %v", err)
	}
}

// --- a MongoDB-wire server in a process of its own ---

const mongoChildEnv = "INVITEGATE_TESTENV_FERRETDB"

// ServeMongoIfChild must be called first in the TestMain of a package
// that uses StartMongoProcess: in the child process StartMongoProcess
// starts (the test binary itself), it runs FerretDB until SIGTERM or
// SIGKILL and exits; in the test process it returns at once.
func ServeMongoIfChild() {
	spec := os.Getenv(mongoChildEnv)
	if spec == "" {
		return
	}
	dir, addr, _ := strings.Cut(spec, "|")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if _, stopDB, err := embedded.StartFerretDB(ctx, dir, addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	} else {
		defer stopDB()
	}
	fmt.Println("ready")
	<-ctx.Done()
	os.Exit(0)
}

// MongoProcess is FerretDB (SQLite backend) in a child process of its own,
// so a test can kill it and start it again on the same address and data.
type MongoProcess struct {
	URI  string
	Addr string
	Dir  string

	*Child
}

// StartMongoProcess starts a MongoDB-wire server in a child process (the
// test binary re-run; see ServeMongoIfChild) and waits until it answers.
// It is killed when the test ends.
func StartMongoProcess(tb testing.TB) *MongoProcess {
	tb.Helper()
	SkipIfShort(tb, "FerretDB in a process of its own")
	m := &MongoProcess{Addr: FreeAddr(tb), Dir: tb.TempDir()}
	m.URI = "mongodb://" + m.Addr + "/"
	m.Child = NewChild(tb, "ferretdb", mongoChildEnv+"="+m.Dir+"|"+m.Addr)
	m.Restart(tb)
	return m
}

// Restart starts the server again (killing it first if it runs) on the same
// address and data directory, and waits until it accepts connections.
func (m *MongoProcess) Restart(tb testing.TB) {
	tb.Helper()
	m.Child.Restart(tb)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: ferretdb not listening on %s: %v", m.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Child is the test binary run again as a helper process: the package's
// TestMain hands it to the helper's code before any test runs (as
// ServeMongoIfChild does), which prints "ready" once it serves and runs
// until it is killed.
type Child struct {
	name string
	env  []string

	proc
	out *Buffer
}

// NewChild returns a Child that runs the test binary with env added; Restart
// starts it. It is killed when the test ends, and its output logged if the
// test failed.
func NewChild(tb testing.TB, name string, env ...string) *Child {
	tb.Helper()
	SkipIfShort(tb, "a helper process ("+name+")")
	c := &Child{name: name, env: env, out: &Buffer{}}
	tb.Cleanup(func() {
		c.kill()
		if tb.Failed() {
			tb.Logf("%s output:\n%s", c.name, c.out.String())
		}
	})
	return c
}

// Restart starts the child (killing it first if it runs) and waits until it
// prints "ready".
func (c *Child) Restart(tb testing.TB) {
	tb.Helper()
	c.kill()
	from := len(c.out.String())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, err := c.start(cmd)
	if err != nil {
		tb.Fatalf("testenv: start %s: %v", c.name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(c.out.String()[from:], "ready") {
		select {
		case <-done:
			tb.Fatalf("testenv: %s exited at start:\n%s", c.name, c.out.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: %s not ready after 30s:\n%s", c.name, c.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill stops the child with SIGKILL and waits until it is gone.
func (c *Child) Kill(tb testing.TB) {
	tb.Helper()
	c.kill()
}
