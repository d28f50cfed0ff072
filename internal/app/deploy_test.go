package app

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/invitegate/invitegate/internal/testenv"
)

var metricRef = regexp.MustCompile(`\binvitegate_[a-z0-9_]+`)

// exported returns the metric names /metrics can show, with the series a
// histogram adds.
func exported() map[string]bool {
	out := map[string]bool{}
	for _, n := range metricNames() {
		out[n] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			out[n+suffix] = true
		}
	}
	return out
}

// TestDashboardQueriesExportedMetrics fails when a Grafana panel or a
// Prometheus alert queries a metric the service does not export (renamed,
// removed, misspelled).
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	have := exported()
	check := func(file string, exprs []string) {
		t.Helper()
		refs := 0
		for _, e := range exprs {
			for _, m := range metricRef.FindAllString(e, -1) {
				refs++
				if !have[m] {
					t.Errorf("%s queries %s, which invitegate does not export", file, m)
				}
			}
		}
		if refs == 0 {
			t.Errorf("%s queries no invitegate metric at all", file)
		}
	}

	dashboards, _ := filepath.Glob("../../deploy/grafana/dashboards/*.json")
	if len(dashboards) == 0 {
		t.Fatal("no dashboards found")
	}
	for _, f := range dashboards {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var exprs []string
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
		}
		check(f, exprs)
	}

	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, line := range strings.Split(string(rules), "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "expr:") {
			exprs = append(exprs, l)
		}
	}
	check("alerts.yml", exprs)
}

// TestAlertRulesPassPromtool runs `promtool check rules` (Debian package
// prometheus; .ci/run installs it).
func TestAlertRulesPassPromtool(t *testing.T) {
	testenv.SkipIfShort(t, "promtool")
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found on PATH: install it (apt-get install -y prometheus); CI checks the alert rules with it")
	}
	out, err := exec.Command(promtool, "check", "rules", "../../deploy/prometheus/alerts.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool output: %s", out)
	}
}

func TestExportedMetricNames(t *testing.T) {
	names := metricNames()
	if len(names) < 10 {
		t.Fatalf("only %d metrics registered: %v", len(names), names)
	}
	for _, want := range []string{"invitegate_http_requests_total", "invitegate_reservation_lag_seconds", "invitegate_build_info", "invitegate_reserve_tokens_moved_total"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("%s is not exported", want)
		}
	}
}

// TestComposeFileIsConsistent checks docker-compose.yml statically (there
// is no Docker engine on CI machines): every service the stack needs is
// there, every health condition has a health check, every mounted file
// exists, and the API replicas are built from this repo's Dockerfile.
func TestComposeFileIsConsistent(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Build       any                      `yaml:"build"`
			Image       string                   `yaml:"image"`
			Command     []string                 `yaml:"command"`
			Volumes     []string                 `yaml:"volumes"`
			Healthcheck *struct{ Test []string } `yaml:"healthcheck"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"mongo", "redis", "redis-replica", "redis-sentinel1", "redis-sentinel2", "redis-sentinel3", "seed", "api1", "api2", "nginx", "prometheus", "grafana", "mailpit"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	for name, s := range c.Services {
		for dep, d := range s.DependsOn {
			target, ok := c.Services[dep]
			if !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
				continue
			}
			if d.Condition == "service_healthy" && target.Healthcheck == nil {
				t.Errorf("%s waits for %s to be healthy, but %s has no health check", name, dep, dep)
			}
		}
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
					t.Errorf("%s mounts %s, which does not exist", name, src)
				}
			}
		}
	}
	for _, api := range []string{"api1", "api2"} {
		s := c.Services[api]
		if s.Build != "." || s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "invitegate probe") {
			t.Errorf("%s: want build . and an `invitegate probe` health check, got %+v", api, s)
		}
		for _, k := range []string{"INVITEGATE_SHARDS", "INVITEGATE_REDIS_ADDRS", "INVITEGATE_REDIS_SENTINEL_MASTER"} {
			if s.Environment[k] != c.Services["seed"].Environment[k] {
				t.Errorf("%s and seed disagree on %s", api, k)
			}
		}
		// The services follow the primary through all three Sentinels.
		addrs := strings.Split(s.Environment["INVITEGATE_REDIS_ADDRS"], ",")
		if s.Environment["INVITEGATE_REDIS_SENTINEL_MASTER"] == "" || len(addrs) != 3 {
			t.Errorf("%s: want the three Sentinels and a master name, got %q and %q", api, addrs, s.Environment["INVITEGATE_REDIS_SENTINEL_MASTER"])
		}
		for _, a := range addrs {
			host, _, _ := strings.Cut(a, ":")
			if _, ok := c.Services[host]; !ok || !strings.HasPrefix(host, "redis-sentinel") {
				t.Errorf("%s: INVITEGATE_REDIS_ADDRS names %s, not a Sentinel service", api, a)
			}
			if d, ok := s.DependsOn[host]; !ok || d.Condition != "service_healthy" {
				t.Errorf("%s does not wait for %s to be healthy", api, host)
			}
		}
	}
	if _, err := os.Stat("../../Dockerfile"); err != nil {
		t.Error("Dockerfile missing")
	}
	for _, r := range []string{"redis", "redis-replica"} {
		if !strings.Contains(strings.Join(c.Services[r].Command, " "), "--appendonly yes") {
			t.Errorf("%s runs without AOF", r)
		}
	}
	if !strings.Contains(strings.Join(c.Services["redis-replica"].Command, " "), "--replicaof redis 6379") {
		t.Error("redis-replica does not replicate redis")
	}
	conf, err := os.ReadFile("../../deploy/redis/sentinel.conf")
	if err != nil {
		t.Fatal(err)
	}
	if master := c.Services["api1"].Environment["INVITEGATE_REDIS_SENTINEL_MASTER"]; !strings.Contains(string(conf), "sentinel monitor "+master+" redis 6379 2") {
		t.Errorf("deploy/redis/sentinel.conf does not monitor %s on redis:6379 with quorum 2", master)
	}
}
