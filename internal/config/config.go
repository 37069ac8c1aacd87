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

// Habit is what every bhiv Config is: it sets its own defaults and checks
// itself (see the package doc).
type Habit[T any] interface {
	WithDefaults() T
	Validate() error
}

// Ready returns c with its defaults set and nil, or c and the problems
// Validate finds: the first step of every constructor, so that each applies
// defaults, then validates, in that order.
func Ready[T Habit[T]](c T) (T, error) {
	c = c.WithDefaults()
	return c, c.Validate()
}
