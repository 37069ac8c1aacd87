package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LimitStats summarises samples of a concurrency limit.
type LimitStats struct {
	Mean float64 `json:"mean"`
	Min  int     `json:"min"`
	Max  int     `json:"max"`
	Last int     `json:"last"`
}

// limitMetric is the gauge of Core's concurrency limit.
const limitMetric = "bhiv_core_concurrency_limit"

// sampleLimit samples Core's concurrency limit from now until the returned
// function is called, which returns the summary (nil without a sample):
// every 50 ms from the in-process Core, every 500 ms from the consumer
// process's /metrics (each scrape costs the measured process some CPU).
func (r *run) sampleLimit(ctx context.Context) func() *LimitStats {
	var read func() (int, error)
	every := 50 * time.Millisecond
	switch {
	case r.st == nil:
		return func() *LimitStats { return nil }
	case r.st.pipe != nil:
		core := r.st.pipe.Core
		read = func() (int, error) { return core.ConcurrencyLimit(), nil }
	default:
		url := r.st.adminURL()
		if url == "" {
			return func() *LimitStats { return nil }
		}
		every = 500 * time.Millisecond
		read = func() (int, error) { return scrapeGauge(ctx, url+"/metrics", limitMetric) }
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan *LimitStats, 1)
	go func() {
		var s *LimitStats
		sum, n := 0, 0
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if l, err := read(); err == nil {
				if s == nil {
					s = &LimitStats{Min: l, Max: l}
				}
				s.Min, s.Max, s.Last = min(s.Min, l), max(s.Max, l), l
				sum, n = sum+l, n+1
				s.Mean = float64(sum) / float64(n)
			}
			select {
			case <-ctx.Done():
				done <- s
				return
			case <-tick.C:
			}
		}
	}()
	return sync.OnceValue(func() *LimitStats {
		cancel()
		return <-done
	})
}

// scrapeGauge reads the value of an unlabelled gauge from a Prometheus
// text exposition at url.
func scrapeGauge(ctx context.Context, url, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s", url, name)
}
