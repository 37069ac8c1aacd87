package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// profileWindow is the length of each CPU profile of the consumer process:
// the profiler's HTTP handler needs the length up front, and the run's is
// not known, so the bench takes profiles back to back and waits for the
// last one to end. A variable for the tests.
var profileWindow = 5 * time.Second

// profile takes CPU profiles of the consumer process, back to back, from
// now until the returned function is called; that function waits for the
// profile under way, takes a heap profile, and returns the files written;
// it may be called again (it returns the same). Without
// Config.ConsumerProfile it does nothing.
func (r *run) profile(ctx context.Context) func() []string {
	if r.c.ConsumerProfile == "" || r.st == nil || r.st.proc == nil {
		return func() []string { return nil }
	}
	admin := r.st.adminURL()
	if admin == "" {
		r.c.Logger.Warn("consumer profiles: its admin server is off (BHIV_ADMIN_ADDR)")
		return func() []string { return nil }
	}
	stop := make(chan struct{})
	done := make(chan []string, 1)
	go func() {
		var files []string
		for i := 1; ; i++ {
			select {
			case <-stop:
				done <- files
				return
			default:
			}
			name := fmt.Sprintf("%s-%02d.pprof", r.c.ConsumerProfile, i)
			if err := fetchProfile(context.WithoutCancel(ctx), admin+"/debug/pprof/profile?seconds="+strconv.Itoa(max(1, int(profileWindow.Seconds()))), name); err != nil {
				r.c.Logger.Warn("consumer CPU profile", "file", name, "err", err)
				select {
				case <-stop:
				case <-time.After(100 * time.Millisecond): // the admin server may not be up yet
				}
				continue
			}
			files = append(files, name)
		}
	}()
	return sync.OnceValue(func() []string {
		close(stop)
		files := <-done
		name := r.c.ConsumerProfile + "-heap.pprof"
		if err := fetchProfile(context.WithoutCancel(ctx), admin+"/debug/pprof/heap", name); err != nil {
			r.c.Logger.Warn("consumer heap profile", "file", name, "err", err)
			return files
		}
		return append(files, name)
	})
}

// fetchProfile GETs url into the file name.
func fetchProfile(ctx context.Context, url, name string) error {
	ctx, cancel := context.WithTimeout(ctx, profileWindow+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
