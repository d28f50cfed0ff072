package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/invitegate/invitegate/internal/testenv"
)

// TestProductionBinaryLinksNoDevServers: the production binary must not
// carry the in-process Redis, the embedded MongoDB-wire server, or what
// only tests, make run and make bench use (SMTP server, browser driver,
// load generator).
func TestProductionBinaryLinksNoDevServers(t *testing.T) {
	testenv.SkipIfShort(t, "the go tool (go list -deps)")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := string(out)
	if !strings.Contains(deps, "github.com/redis/go-redis/v9") {
		t.Fatal("go list output does not look like a dependency list")
	}
	for _, banned := range []string{"github.com/alicebob/miniredis", "github.com/FerretDB/FerretDB", "internal/embedded", "internal/testenv", "github.com/emersion/go-smtp", "github.com/chromedp/chromedp", "github.com/tsenart/vegeta"} {
		if strings.Contains(deps, banned) {
			t.Errorf("cmd/invitegate links %s", banned)
		}
	}
}
