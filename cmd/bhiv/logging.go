package main

import (
	"io"
	"log/slog"
	"os"
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
