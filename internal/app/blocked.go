package app

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/invitegate/invitegate/internal/email"
)

// loadBlockedDomains reads a list of email domains to refuse: one per line,
// blank lines and # comments ignored, normalized the way addresses are (so
// an IDN domain matches in either form).
func loadBlockedDomains(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("INVITEGATE_BLOCKED_DOMAINS_FILE: %w", err)
	}
	defer f.Close()
	out := make(map[string]bool)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		d, err := email.NormalizeDomain(line)
		if err != nil {
			return nil, fmt.Errorf("INVITEGATE_BLOCKED_DOMAINS_FILE %s:%d: %q is not a mail domain", path, n, line)
		}
		out[d] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("INVITEGATE_BLOCKED_DOMAINS_FILE: %w", err)
	}
	return out, nil
}
