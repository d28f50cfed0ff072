package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadBlockedDomains(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("# disposable\nMailinator.com\n\n  bücher.example  # IDN\n"), 0o644)
	d, err := loadBlockedDomains(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != 2 || !d["mailinator.com"] || !d["xn--bcher-kva.example"] {
		t.Fatalf("domains %v", d)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("ok.example\nnot a domain\n"), 0o644)
	if _, err := loadBlockedDomains(bad); err == nil || !strings.Contains(err.Error(), ":2:") {
		t.Fatalf("err = %v, want the line number", err)
	}
	if _, err := loadBlockedDomains(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file loaded")
	}
}
