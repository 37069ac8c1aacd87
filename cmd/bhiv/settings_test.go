package main

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files (.env.example, the files testdata/script compares with)")

// envExample renders .env.example from the settings table.
func envExample() string {
	var b strings.Builder
	b.WriteString("# bhiv settings: copy to .env (docker compose reads it) or export them.\n")
	b.WriteString("# Every setting is also a flag (BHIV_CORE_URL → --core-url); flags win.\n")
	b.WriteString("# Generated from cmd/bhiv/settings.go: go test ./cmd/bhiv -run EnvExample -update\n")
	for _, g := range allGroups {
		b.WriteString("\n# ── " + g.title + " ──\n")
		for _, s := range g.settings {
			b.WriteString("# " + s.help)
			if s.secret {
				b.WriteString(" (secret: never logged)")
			}
			b.WriteString("\n" + s.env + "=" + s.def + "\n")
		}
	}
	return b.String()
}

func TestEnvExample(t *testing.T) {
	path := filepath.Join("..", "..", ".env.example")
	want := envExample()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf(".env.example is out of date with the settings table; run go test ./cmd/bhiv -run EnvExample -update")
	}
	// Every variable in .env.example is a setting, once.
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(got)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf(".env.example: line %q is not NAME=VALUE", line)
			continue
		}
		if seen[name] {
			t.Errorf(".env.example names %s twice", name)
		}
		seen[name] = true
	}
	for _, g := range allGroups {
		for _, s := range g.settings {
			if !seen[s.env] {
				t.Errorf(".env.example lacks %s", s.env)
			}
		}
	}
}

// TestEnvReadsOnlyKnownSettings checks that every environment variable the
// code reads is in the settings table (and so in .env.example), and that
// every setting in the table is read somewhere.
// TestDurText checks that a duration default reads as a person writes it,
// and as time.ParseDuration reads it back.
func TestDurText(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{5 * time.Millisecond, "5ms"},
		{time.Second, "1s"},
		{90 * time.Second, "1m30s"},
		{2 * time.Minute, "2m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{168 * time.Hour, "168h"},
		{time.Hour + time.Second, "1h0m1s"},
	} {
		got := durText(tc.d)
		if got != tc.want {
			t.Errorf("durText(%v) = %q, want %q", tc.d, got, tc.want)
		}
		if back, err := time.ParseDuration(got); err != nil || back != tc.d {
			t.Errorf("durText(%v) = %q reads back as %v, %v", tc.d, got, back, err)
		}
	}
}

func TestEnvReadsOnlyKnownSettings(t *testing.T) {
	known := map[string]bool{}
	for _, g := range allGroups {
		for _, s := range g.settings {
			known[s.env] = true
		}
	}
	read := map[string]bool{}
	// Literal names passed to a getenv or to a config reader.
	re := regexp.MustCompile(`(?:getenv|Getenv|LookupEnv|\.str|\.int|\.dur|\.bool|\.float|\.oneOf|\.check)\("([A-Z][A-Z0-9_]+)"`)
	err := filepath.WalkDir(filepath.Join("..", ".."), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "data") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			read[m[1]] = true
			if !known[m[1]] {
				t.Errorf("%s reads %s, which is not in the settings table (.env.example)", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var unread []string
	for name := range known {
		if !read[name] {
			unread = append(unread, name)
		}
	}
	sort.Strings(unread)
	if len(unread) > 0 {
		t.Errorf("settings never read by the code: %v", unread)
	}
}

// TestCoreConcurrencySetting reads BHIV_CORE_CONCURRENCY and its bounds
// as `bhiv consume` does.
func TestCoreConcurrencySetting(t *testing.T) {
	tests := []struct {
		env                 map[string]string
		concurrency, lo, hi int
	}{
		{map[string]string{}, 0, 4, 1024},
		{map[string]string{"BHIV_CORE_CONCURRENCY": "AUTO", "BHIV_CORE_CONCURRENCY_MIN": "16", "BHIV_CORE_CONCURRENCY_MAX": "256"}, 0, 16, 256},
		{map[string]string{"BHIV_CORE_CONCURRENCY": "32"}, 32, 4, 1024},
		{map[string]string{"BHIV_CORE_CONCURRENCY": "10000", "BHIV_CORE_CONCURRENCY_MAX": "10000"}, 10000, 4, 10000},
		// A max below the default floor lowers the floor with it, unless the
		// floor is set.
		{map[string]string{"BHIV_CORE_CONCURRENCY_MAX": "2"}, 0, 2, 2},
		{map[string]string{"BHIV_CORE_CONCURRENCY_MIN": "1", "BHIV_CORE_CONCURRENCY_MAX": "2"}, 0, 1, 2},
		{map[string]string{"BHIV_CORE_CONCURRENCY_MIN": "4", "BHIV_CORE_CONCURRENCY_MAX": "8"}, 0, 4, 8},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("consume", flag.ContinueOnError)
		c := newConfig(fs, func(k string) string { return tt.env[k] }, coreSettings, bucketSettings, failureSettings)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		got := readSinks(c).core
		if err := c.err(); err != nil {
			t.Errorf("%v: %v", tt.env, err)
			continue
		}
		if got.Concurrency != tt.concurrency || got.ConcurrencyMin != tt.lo || got.ConcurrencyMax != tt.hi {
			t.Errorf("%v: concurrency %d, min %d, max %d; want %d, %d, %d", tt.env,
				got.Concurrency, got.ConcurrencyMin, got.ConcurrencyMax, tt.concurrency, tt.lo, tt.hi)
		}
	}
}

// TestCoreConcurrencyBoundsRefused: a floor set above the max is an error
// that names both settings.
func TestCoreConcurrencyBoundsRefused(t *testing.T) {
	env := map[string]string{"BHIV_CORE_CONCURRENCY_MIN": "4", "BHIV_CORE_CONCURRENCY_MAX": "2"}
	fs := flag.NewFlagSet("consume", flag.ContinueOnError)
	c := newConfig(fs, envMap(env), coreSettings, bucketSettings, failureSettings)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	readSinks(c)
	want := `BHIV_CORE_CONCURRENCY_MAX="2": is below BHIV_CORE_CONCURRENCY_MIN (4)`
	if err := c.err(); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one with %q", err, want)
	}
}

// TestSettingReaders checks what int and dur make of a value, and the error
// each gives for one they refuse, naming the variable.
func TestSettingReaders(t *testing.T) {
	for _, tc := range []struct {
		env, val string
		read     func(c *config) any
		want     any
		wantErr  string
	}{
		{"BHIV_CORE_MAX_RETRIES", "", func(c *config) any { return c.int("BHIV_CORE_MAX_RETRIES", 0) }, 3, ""},
		{"BHIV_CORE_MAX_RETRIES", "7", func(c *config) any { return c.int("BHIV_CORE_MAX_RETRIES", 0) }, 7, ""},
		{"BHIV_CORE_MAX_RETRIES", "lots", func(c *config) any { return c.int("BHIV_CORE_MAX_RETRIES", 0) }, 0, `BHIV_CORE_MAX_RETRIES="lots": not a whole number`},
		{"BHIV_CORE_MAX_RETRIES", "-1", func(c *config) any { return c.int("BHIV_CORE_MAX_RETRIES", 0) }, -1, `BHIV_CORE_MAX_RETRIES="-1": must be at least 0`},
		{"BHIV_CORE_TIMEOUT", "", func(c *config) any { return c.dur("BHIV_CORE_TIMEOUT", time.Millisecond) }, 10 * time.Second, ""},
		{"BHIV_CORE_TIMEOUT", "250ms", func(c *config) any { return c.dur("BHIV_CORE_TIMEOUT", time.Millisecond) }, 250 * time.Millisecond, ""},
		{"BHIV_CORE_TIMEOUT", "10", func(c *config) any { return c.dur("BHIV_CORE_TIMEOUT", time.Millisecond) }, time.Duration(0), `BHIV_CORE_TIMEOUT="10": not a duration such as 500ms, 10s or 2m`},
		{"BHIV_CORE_TIMEOUT", "0s", func(c *config) any { return c.dur("BHIV_CORE_TIMEOUT", time.Millisecond) }, time.Duration(0), `BHIV_CORE_TIMEOUT="0s": must be at least 1ms`},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		env := map[string]string{}
		if tc.val != "" {
			env[tc.env] = tc.val
		}
		c := newConfig(fs, envMap(env), coreSettings)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		if got := tc.read(c); got != tc.want {
			t.Errorf("%s=%q: read %v, want %v", tc.env, tc.val, got, tc.want)
		}
		err := c.err()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s=%q: %v", tc.env, tc.val, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s=%q: error %v, want one with %q", tc.env, tc.val, err, tc.wantErr)
		}
	}
}
