package reserve

import (
	"crypto/sha1"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
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
