package config

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	type pair struct{ a, b int }
	for _, tc := range []struct {
		name string
		run  func() (got, want any)
	}{
		{"zero int", func() (any, any) { v := 0; Default(&v, 5); return v, 5 }},
		{"set int", func() (any, any) { v := 3; Default(&v, 5); return v, 3 }},
		{"negative int stays", func() (any, any) { v := -1; Default(&v, 5); return v, -1 }},
		{"zero string", func() (any, any) { v := ""; Default(&v, "x"); return v, "x" }},
		{"set string", func() (any, any) { v := "y"; Default(&v, "x"); return v, "y" }},
		{"zero duration", func() (any, any) { var v time.Duration; Default(&v, time.Second); return v, time.Second }},
		{"negative duration stays", func() (any, any) { v := -time.Second; Default(&v, time.Second); return v, -time.Second }},
		{"zero struct", func() (any, any) { var v pair; Default(&v, pair{1, 2}); return v, pair{1, 2} }},
		{"set struct", func() (any, any) { v := pair{b: 3}; Default(&v, pair{1, 2}); return v, pair{b: 3} }},
		{"zero default", func() (any, any) { v := 7; Default(&v, 0); return v, 7 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := tc.run(); got != want {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func TestLogger(t *testing.T) {
	own := slog.New(slog.NewTextHandler(nil, nil))
	for _, tc := range []struct {
		name string
		in   *slog.Logger
	}{
		{"nil", nil},
		{"set", own},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Logger(tc.in)
			switch {
			case got == nil:
				t.Fatal("got a nil logger")
			case tc.in != nil && got != tc.in:
				t.Errorf("got %p, want the logger given, %p", got, tc.in)
			case tc.in == nil && got.Enabled(context.Background(), slog.LevelError):
				t.Error("the logger for nil is enabled; want one that discards")
			}
		})
	}
}

// testConfig is a Config of the habit: Size defaults to 8 and must then be
// at most 10.
type testConfig struct{ Size int }

func (c testConfig) WithDefaults() testConfig {
	Default(&c.Size, 8)
	return c
}

func (c testConfig) Validate() error {
	if c = c.WithDefaults(); c.Size > 10 {
		return errors.New("size over 10")
	}
	return nil
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      testConfig
		want    int
		wantErr bool
	}{
		{"zero takes the default", testConfig{}, 8, false},
		{"set stays", testConfig{Size: 3}, 3, false},
		{"invalid", testConfig{Size: 11}, 11, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Ready(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tc.wantErr)
			}
			if got.Size != tc.want {
				t.Errorf("Size = %d, want %d", got.Size, tc.want)
			}
		})
	}
}
