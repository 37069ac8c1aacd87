package config

import "log/slog"

// Default sets *p to d when *p is the zero value of its type, and leaves it
// as it is otherwise: a negative number, for one, stays negative.
func Default[T comparable](p *T, d T) {
	var zero T
	if *p == zero {
		*p = d
	}
}

// Logger returns l, or a logger that discards everything when l is nil.
func Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
