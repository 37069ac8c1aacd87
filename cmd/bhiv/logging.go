package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// newLogger builds the process logger from LOG_LEVEL and LOG_FORMAT: tint
// text (coloured when w is a terminal) or slog JSON.
func newLogger(c *config, w io.Writer) *slog.Logger {
	var level slog.Level
	lv := c.oneOf("LOG_LEVEL", "debug", "info", "warn", "error")
	_ = level.UnmarshalText([]byte(lv))
	format := c.oneOf("LOG_FORMAT", "text", "json")
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(tint.NewTextHandler(w, &tint.Options{
		Level:      level,
		TimeFormat: time.TimeOnly,
		NoColor:    !isTerminal(w),
	}))
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// redactURL hides the user-info password (or token) of URLs in s, which may
// be a comma-separated list.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		scheme, rest, ok := strings.Cut(p, "://")
		if !ok {
			continue
		}
		at := strings.LastIndex(rest, "@")
		slash := strings.Index(rest, "/")
		if at < 0 || (slash >= 0 && at > slash) {
			continue
		}
		parts[i] = fmt.Sprintf("%s://<redacted>@%s", scheme, rest[at+1:])
	}
	return strings.Join(parts, ",")
}
